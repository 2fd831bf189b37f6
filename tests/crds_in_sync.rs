//! `crds/` is generated from the Rust types; this fails when they drift.
//! Regenerate with `cargo run -- crd --write crds` (see README).

#[test]
fn crds_directory_matches_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (file, crd) in frys_rollback::api::crds() {
        let path = dir.join(file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo run -- crd --write crds`",
                path.display()
            )
        });
        assert!(
            on_disk == frys_rollback::api::crd_yaml(&crd),
            "{} is out of date with the Rust types; run `cargo run -- crd --write crds`",
            path.display()
        );
    }
}
