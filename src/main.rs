// mimalloc rather than glibc's malloc: at 10,000 policies glibc kept ~100 MB of freed memory
// (the caches' initial lists, decoded and dropped) as resident, per thread arena
// (BENCHMARKS.md "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    frys_rollback::cli::Cli::from_env().execute().await
}
