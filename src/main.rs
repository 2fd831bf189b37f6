#[tokio::main]
async fn main() -> anyhow::Result<()> {
    frys_rollback::cli::Cli::from_env().execute().await
}
