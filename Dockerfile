# frys-rollback operator image.
#
# Build: docker build -t frys-rollback:dev .
# (No Docker engine exists on the project's build machines; this file is linted with hadolint
# in the test suite but was never built there.)

# Toolchain pinned to the version the project is developed and tested with.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Reproducible: no timestamps or paths of this machine in the binary. Set before the
# dependency build so both builds use the same flags (and the cache).
ENV SOURCE_DATE_EPOCH=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    RUSTFLAGS="--remap-path-prefix=/src=. --remap-path-prefix=/usr/local/cargo=cargo"
# Manifests first so dependency builds are cached across source changes.
COPY Cargo.toml Cargo.lock ./
COPY tests/sim/Cargo.toml tests/sim/Cargo.toml
RUN mkdir -p src tests/sim/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > tests/sim/src/main.rs \
    && cargo build --release --locked -p frys-rollback \
    && rm -rf src tests/sim/src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p frys-rollback \
    && cp target/release/frys-rollback /frys-rollback

# Distroless: glibc and CA certificates only, no shell; runs as the image's nonroot user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /frys-rollback /usr/local/bin/frys-rollback
# 65532 is distroless' nonroot user; numeric so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/frys-rollback"]
CMD ["run"]
