//! demo (placeholder while harness lands)
#[derive(clap::Args)]
pub struct DemoArgs {}
pub fn main(_: DemoArgs) -> anyhow::Result<()> { anyhow::bail!("not yet") }
