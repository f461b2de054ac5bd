//! `wick bench`: prompt processing, decode speed and time to first token.

use clap::Args;

use crate::config::ServeArgs;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
