use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crusades::commands::{self, compress::CompressArgs};
use crusades::InputError;

/// crusades: the MFU benchmark harness for the Templar Crusades competition (Bittensor SN3).
#[derive(Parser)]
#[command(name = "crusades", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The full evaluation a validator runs: timed runs, MFU, verification gates, one record.
    Bench(commands::bench::BenchArgs),
    /// Run the trusted reference: Templar's DeMo windows on a LLaMA-style model.
    Reference(commands::reference::ReferenceArgs),
    /// Compress every tensor of a safetensors file as one upload (DCT, top-k, quantisation).
    Compress(CompressArgs),
    /// Aggregate uploads of the same tensors (own first, then peers) into the sign update.
    Aggregate {
        /// Upload files written by `crusades compress` (or by a reference run's --out).
        #[arg(required = true, num_args = 1..)]
        uploads: Vec<PathBuf>,
        /// Where to write NAME.aggregate and NAME.update.
        #[arg(short, long)]
        output: PathBuf,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print a JSON report instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Time compression and aggregation on a model's gradient shapes (GB/s of f32 gradient).
    CompressBench(commands::compress::BenchArgs),
    /// Build a submission crate into a WebAssembly component and print its sha256.
    Build(commands::build::BuildArgs),
    /// The result store: import records, list and show evaluations.
    Results {
        #[command(subcommand)]
        command: commands::results::ResultsCommand,
    },
    /// The ranking by median MFU, the leader, the MFU to beat and the weight vector.
    Leaderboard(commands::results::LeaderboardArgs),
    /// The weight vector (winner-takes-all with burn) at a block.
    Weights(commands::results::WeightsArgs),
    /// Re-run the evaluation a record describes (same submission, same workload) and say
    /// REPRODUCED or DIVERGED.
    Reproduce(commands::reproduce::ReproduceArgs),
    /// Serve the dashboard and its JSON API (leaderboard, evaluations, MFU history, weights).
    Serve(commands::serve::ServeArgs),
    /// The validator daemon: chain commitments in, evaluations, weights out (see
    /// `--print-config` for the config file).
    Validate(commands::validate::ValidateArgs),
    /// One-shot chain actions: commit a submission, set weights once, read the metagraph and
    /// the commitments.
    Chain {
        #[command(subcommand)]
        command: commands::chain::ChainCommand,
    },
    /// Run the adversarial corpus (submissions/exploits) through bench: every case must end as
    /// its case.toml says.
    Corpus(commands::corpus::CorpusArgs),
    /// Run a submission once in the sandbox: outputs, timing and a per-op profile.
    Run(commands::run::RunArgs),
    /// Print the FLOP model of a workload term by term: how model FLOPs per token are counted.
    Flops(commands::flops::FlopsArgs),
    /// What the harness sees here: CPU, CUDA driver, GPU, libtorch's CUDA backend, NVRTC and
    /// the peak FLOP/s; exit 2 when --device cannot be used.
    Hardware(commands::hardware::HardwareArgs),
    /// List the ops a submission can call, with their arguments and FLOP formulas.
    Ops {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Internal: the worker process that hosts one run (started by the harness itself).
    #[command(name = "__worker", hide = true)]
    Worker {
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Reference(args) => commands::reference::run(args),
        Command::Compress(args) => commands::compress::compress(args),
        Command::Aggregate {
            uploads,
            output,
            device,
            json,
        } => commands::compress::aggregate(&uploads, &output, &device, json),
        Command::CompressBench(args) => commands::compress::bench(args),
        Command::Build(args) => commands::build::run(args),
        Command::Results { command } => commands::results::run(command),
        Command::Leaderboard(args) => commands::results::leaderboard_command(args),
        Command::Weights(args) => commands::results::weights_command(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Chain { command } => commands::chain::run(command),
        Command::Ops { json } => commands::ops::run(json),
        Command::Flops(args) => commands::flops::run(args),
        Command::Bench(args) => match commands::bench::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Corpus(args) => match commands::corpus::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Reproduce(args) => match commands::reproduce::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Hardware(args) => match commands::hardware::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Run(args) => match commands::run::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Worker { job, out } => {
            return match crusades_sandbox::worker::serve(&job, &out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("worker: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if is_input_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Exit code 2 means "what you asked for or handed in is wrong" (as for clap's usage errors);
/// 1 means the harness itself failed.
fn is_input_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<InputError>()
            || c.downcast_ref::<crusades_reference::Error>()
                .is_some_and(crusades_reference::Error::is_input_error)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
