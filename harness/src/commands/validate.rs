//! `crusades validate`: the validator daemon (see `validator::daemon`), its logs and its HTTP
//! endpoint.

use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tracing::info;

use super::results::default_db_path;
use crate::bail_input;
use crate::validator::config::{Config, EXAMPLE};
use crate::validator::daemon::Daemon;
use crate::validator::metrics::Metrics;

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The config file (TOML); `--print-config` shows every key with its default.
    #[arg(
        long,
        short,
        value_name = "PATH",
        required_unless_present = "print_config"
    )]
    pub config: Option<PathBuf>,
    /// Print the example config (every key, every default) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Compute and record weights but sign nothing (overrides [weights] dry_run).
    #[arg(long)]
    pub dry_run: bool,
    /// Log as JSON lines instead of text (for journald, Loki, …).
    #[arg(long)]
    pub log_json: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    if args.print_config {
        print!("{EXAMPLE}");
        return Ok(());
    }
    let Some(path) = &args.config else {
        bail_input!("--config is required");
    };
    let mut config = Config::load(path).map_err(crate::InputError)?;
    if args.dry_run {
        config.weights.dry_run = true;
    }
    init_logging(args.log_json);
    let store_path = config
        .store
        .as_deref()
        .map(crate::validator::config::expand_home)
        .unwrap_or_else(default_db_path);
    let http = config.http.clone();
    let threshold = config.weights.threshold();
    let burn = config.weights.burn();
    let daemon = Arc::new(Daemon::new(config, store_path.clone())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async move {
        if let Some(addr) = http.addr().map_err(crate::InputError)? {
            let metrics = daemon.metrics();
            let mut app = Router::new().route(
                "/metrics",
                get(move || {
                    let metrics = metrics.clone();
                    async move { metrics_response(&metrics) }
                }),
            );
            if http.dashboard {
                let store = crusades_results::store::Store::open(&store_path)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                app = app.merge(super::serve::dashboard(store, threshold, burn));
            }
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => bail_input!("[http] listen = \"{addr}\": {e}; pick another port or \"\""),
            };
            info!(addr = %listener.local_addr()?, dashboard = http.dashboard, "serving /metrics");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the HTTP server stopped");
                }
            });
        }
        daemon.run(super::serve::shutdown_signal()).await
    });
    // Not the runtime's own drop, which would wait for an evaluation in progress to finish:
    // stopping means now, and the evaluation's workers die with this process.
    runtime.shutdown_background();
    outcome
}

fn metrics_response(metrics: &Metrics) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// Text logs on stderr (RUST_LOG filters; default info), or JSON lines.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
