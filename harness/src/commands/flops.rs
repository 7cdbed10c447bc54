//! `crusades flops` (placeholder: being written).

#[derive(clap::Args)]
pub struct FlopsArgs {
    #[command(flatten)]
    pub workload: super::workload::WorkloadArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: FlopsArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
