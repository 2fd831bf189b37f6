use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    frys_rollback::cli::Cli::parse().execute().await
}
