//! The daemon's tasks and how they share state.
//!
//! - the poller reads the block height, the metagraph and the commitments every
//!   `poll_interval_s`, and records each new commitment in the store (pending, or invalid with
//!   its reason);
//! - the queue takes due commitments from the store one at a time: fetch, check, evaluate
//!   through `bench`, store the record; a transient failure goes back with a backoff;
//! - the weight setter sets weights every `set_weights_interval_blocks`;
//! - the HTTP server serves `/metrics` (and the dashboard).
//!
//! Everything that must survive a restart is in the store, and each step that changes it is
//! one transaction. A commitment is `done` only once its evaluation is stored; a crash before
//! that leaves it pending, and the restart fetches it again and finds the stored evaluation
//! (if the crash came after the import) instead of evaluating twice.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use crusades_results::leaderboard;
use crusades_results::queue::{CommitmentRow, NewCommitment};
use crusades_results::store::{EvaluationMeta, Store, StoreError};
use tokio::sync::{Mutex, Notify, RwLock};
use tracing::{debug, error, info, warn};

use super::config::{backoff, Config};
use super::fetch::Fetcher;
use super::metrics::Metrics;
use super::setter::{self, WeightsParams};
use super::source;
use crate::chain::client::{ChainError, Metagraph, RawCommitment, Subtensor};
use crate::chain::commitment;
use crate::chain::keys::Hotkey;
use crate::commands::bench::{self, BenchArgs};

/// The daemon state key of the last block weights were set (or dry-run recorded) at.
const LAST_WEIGHTS_KEY: &str = "last_weights_block";

pub struct Daemon {
    config: Config,
    hotkey: Hotkey,
    store_path: PathBuf,
    submissions_dir: PathBuf,
    competition: String,
    metrics: Arc<Metrics>,
    chain: ChainHandle,
    fetcher: Fetcher,
    /// The daemon's connections, opened once before any task starts and never reopened:
    /// opening a store reads its header through a file handle of its own, and closing any
    /// handle to a file drops every POSIX lock this process holds on it, which would pull
    /// the locks from under a connection another task is using.
    store: std::sync::Mutex<Store>,
    weights_store: Mutex<Store>,
    view: RwLock<Option<Metagraph>>,
    wake_queue: Notify,
}

/// The connection, made on first use and again after a failure, with a doubling wait
/// between tries so a dead node is not hammered.
struct ChainHandle {
    url: String,
    timeout: Duration,
    min_wait: u64,
    max_wait: u64,
    state: Mutex<Connection>,
}

#[derive(Default)]
struct Connection {
    client: Option<Arc<Subtensor>>,
    failures: u32,
    next_try: Option<Instant>,
    ever_connected: bool,
}

impl ChainHandle {
    async fn get(&self, metrics: &Metrics) -> Result<Arc<Subtensor>, ChainError> {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.client {
            return Ok(c.clone());
        }
        if let Some(t) = state.next_try {
            if Instant::now() < t {
                return Err(ChainError::Connect {
                    url: self.url.clone(),
                    message: format!(
                        "waiting {} s before the next try",
                        t.saturating_duration_since(Instant::now()).as_secs()
                    ),
                });
            }
        }
        match Subtensor::connect(&self.url, self.timeout).await {
            Ok(c) => {
                let c = Arc::new(c);
                if state.ever_connected {
                    Metrics::inc(&metrics.chain_reconnects);
                }
                info!(url = %self.url, "connected to the chain");
                state.client = Some(c.clone());
                state.failures = 0;
                state.next_try = None;
                state.ever_connected = true;
                metrics.chain_connected.store(1, Ordering::Relaxed);
                Ok(c)
            }
            Err(e) => {
                state.failures += 1;
                let wait = backoff(state.failures, self.min_wait, self.max_wait);
                state.next_try = Some(Instant::now() + wait);
                Metrics::inc(&metrics.chain_rpc_errors);
                warn!(url = %self.url, error = %e, retry_in_s = wait.as_secs(), "cannot connect to the chain");
                Err(e)
            }
        }
    }

    /// After a failed call: count it, and drop the connection when the node or the link is
    /// at fault so that the next use reconnects.
    async fn failed(&self, error: &ChainError, metrics: &Metrics) {
        Metrics::inc(&metrics.chain_rpc_errors);
        if error.is_transient() {
            let mut state = self.state.lock().await;
            if state.client.take().is_some() {
                metrics.chain_connected.store(0, Ordering::Relaxed);
                warn!(error = %error, "chain call failed; reconnecting");
            }
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Daemon {
    /// Checks everything that can be checked before starting: the key loads, the store opens
    /// (and is migrated), the submissions directory can be made.
    pub fn new(config: Config, store_path: PathBuf) -> anyhow::Result<Daemon> {
        let hotkey = Hotkey::load(&config.wallet.source())
            .map_err(|e| crate::InputError(format!("[wallet] {e}")))?;
        // A device or preset that cannot work would fail every evaluation; say so now, once.
        crate::commands::setup_device(&config.evaluation.device, config.evaluation.threads)
            .map_err(|e| crate::InputError(format!("[evaluation] device: {e:#}")))?;
        crusades_reference::config::WorkloadConfig::from_preset(&config.evaluation.preset)
            .map_err(|e| crate::InputError(format!("[evaluation] preset: {e}")))?;
        if let Some(dir) = store_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let store = Store::open(&store_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let weights_store = Store::open(&store_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let submissions_dir = config
            .evaluation
            .submissions_dir
            .as_deref()
            .map(super::config::expand_home)
            .unwrap_or_else(|| {
                store_path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("submissions")
            });
        std::fs::create_dir_all(&submissions_dir)
            .with_context(|| format!("cannot create {}", submissions_dir.display()))?;
        let competition = format!(
            "{}/{}/{}",
            crusades_sandbox::CONTRACT_VERSION,
            config.evaluation.preset,
            crate::commands::workload::device_kind(&config.evaluation.device)
        );
        let fetcher = Fetcher::new(config.fetch.policy())
            .map_err(|e| anyhow::anyhow!("cannot set up the fetcher: {e}"))?;
        let chain = ChainHandle {
            url: config.chain.url.clone(),
            timeout: Duration::from_secs(config.chain.timeout_s),
            min_wait: config.chain.reconnect_min_s,
            max_wait: config.chain.reconnect_max_s,
            state: Mutex::new(Connection::default()),
        };
        Ok(Daemon {
            config,
            hotkey,
            store_path,
            submissions_dir,
            competition,
            metrics: Arc::new(Metrics::new()),
            chain,
            fetcher,
            store: std::sync::Mutex::new(store),
            weights_store: Mutex::new(weights_store),
            view: RwLock::new(None),
            wake_queue: Notify::new(),
        })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn competition(&self) -> &str {
        &self.competition
    }

    pub fn hotkey(&self) -> &Hotkey {
        &self.hotkey
    }

    /// The poller's and the queue's connection; never held across an await.
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A task that panicked holding it left no transaction open (Store::write rolls back
        // on unwind), so the connection is still good.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the three tasks until one of them fails for good (the store cannot be written)
    /// or `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        info!(
            hotkey = %self.hotkey,
            netuid = self.config.netuid,
            competition = %self.competition,
            store = %self.store_path.display(),
            chain = %self.config.chain.url,
            "validator starting"
        );
        self.refresh_gauges();
        let poller = tokio::spawn(self.clone().poll_loop());
        let queue = tokio::spawn(self.clone().queue_loop());
        let weights = tokio::spawn(self.clone().weights_loop());
        let outcome = tokio::select! {
            r = poller => r,
            r = queue => r,
            r = weights => r,
            () = shutdown => {
                info!("shutting down; pending work stays queued in the store");
                return Ok(());
            }
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(join) => Err(anyhow::anyhow!("a validator task panicked: {join}")),
        }
    }

    fn refresh_gauges(&self) {
        let store = self.store();
        let ledger = store.read();
        if let Ok(n) = ledger.pending_count() {
            self.metrics.queue_depth.store(n, Ordering::Relaxed);
        }
        if let Ok(counts) = ledger.commitment_counts() {
            self.metrics
                .commitments_invalid
                .store(counts.invalid, Ordering::Relaxed);
        }
    }

    // ------------------------------------------------------------------ poller

    async fn poll_loop(self: Arc<Self>) -> anyhow::Result<()> {
        let every = Duration::from_secs(self.config.chain.poll_interval_s);
        let mut last_error = String::new();
        loop {
            match self.poll_once().await {
                Ok(new) => {
                    last_error.clear();
                    if new > 0 {
                        self.wake_queue.notify_one();
                    }
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    // The same failure every poll is one log line, not thousands.
                    if text != last_error {
                        warn!(error = %text, "poll failed; trying again next poll");
                        last_error = text;
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// One poll: returns how many new pending commitments it recorded.
    async fn poll_once(&self) -> anyhow::Result<usize> {
        let chain = self.chain.get(&self.metrics).await?;
        let netuid = self.config.netuid;
        let read = async {
            let metagraph = chain.metagraph(netuid).await?;
            let commitments = match &self.config.commitments.file {
                Some(path) => source::read_file(path).map_err(|e| anyhow::anyhow!(e))?,
                None => chain.commitments(netuid).await?,
            };
            Ok::<_, anyhow::Error>((metagraph, commitments))
        };
        let (metagraph, commitments) = match read.await {
            Ok(v) => v,
            Err(e) => {
                if let Some(c) = e.downcast_ref::<ChainError>() {
                    self.chain.failed(c, &self.metrics).await;
                }
                return Err(e);
            }
        };
        self.metrics
            .chain_block
            .store(metagraph.block, Ordering::Relaxed);
        let new = self.record_commitments(&metagraph, &commitments)?;
        *self.view.write().await = Some(metagraph);
        Ok(new)
    }

    fn record_commitments(
        &self,
        metagraph: &Metagraph,
        commitments: &[RawCommitment],
    ) -> anyhow::Result<usize> {
        let netuid = self.config.netuid;
        let observed = self
            .store()
            .write(|ledger| {
                let mut out = Vec::new();
                let mut skipped = Vec::new();
                for c in commitments {
                    let raw: &[u8] = c.data.as_deref().unwrap_or(&[]);
                    let parsed = match &c.data {
                        Err(reason) => Err(reason.clone()),
                        Ok(bytes) => commitment::parse_bytes(bytes).map_err(|e| e.to_string()),
                    };
                    let prefix_url = parsed
                        .as_ref()
                        .map(|p| (p.sha256_prefix.clone(), p.url.to_string()))
                        .map_err(Clone::clone);
                    let new = NewCommitment {
                        netuid,
                        hotkey: &c.hotkey,
                        uid: metagraph.uid_of(&c.hotkey),
                        block: c.block,
                        raw,
                        parsed: match &prefix_url {
                            Ok((p, u)) => Ok((p.as_str(), u.as_str())),
                            Err(reason) => Err(reason.as_str()),
                        },
                    };
                    match ledger.observe_commitment(&new) {
                        Ok(o) => out.push((o, c.hotkey.clone(), prefix_url.err())),
                        // One entry the store cannot hold (an empty hotkey in a file, a
                        // block beyond i64) is left out; the others are recorded.
                        Err(StoreError::Invalid(why)) => skipped.push((c.hotkey.clone(), why)),
                        Err(e) => return Err(e),
                    }
                }
                Ok((out, skipped))
            })
            .map_err(|e| anyhow::anyhow!("recording commitments: {e}"))?;
        let (observed, skipped) = observed;
        for (hotkey, why) in skipped {
            debug!(%hotkey, %why, "commitment left out");
        }
        let mut new_pending = 0;
        for (o, hotkey, invalid) in observed.iter().filter(|(o, _, _)| o.new) {
            Metrics::inc(&self.metrics.commitments_seen);
            match invalid {
                Some(reason) => warn!(%hotkey, id = o.id, %reason, "invalid commitment recorded"),
                None => {
                    new_pending += 1;
                    info!(%hotkey, id = o.id, "new commitment queued");
                }
            }
        }
        self.refresh_gauges();
        Ok(new_pending)
    }

    // ------------------------------------------------------------------- queue

    async fn queue_loop(self: Arc<Self>) -> anyhow::Result<()> {
        let idle = Duration::from_secs(self.config.chain.poll_interval_s);
        loop {
            let due = self
                .store()
                .read()
                .due_commitments(now_unix(), 1)
                .map_err(|e| anyhow::anyhow!("reading the queue: {e}"))?;
            match due.into_iter().next() {
                Some(row) => self.process(row).await?,
                None => {
                    tokio::select! {
                        () = self.wake_queue.notified() => {},
                        () = tokio::time::sleep(idle) => {},
                    }
                }
            }
        }
    }

    /// Fetches, checks and evaluates one commitment, and moves it on in the store. Only a
    /// store that cannot be written is an error: everything else is the commitment's fate.
    async fn process(&self, row: CommitmentRow) -> anyhow::Result<()> {
        let id = row.id;
        let Ok(parsed) = commitment::parse_bytes(&row.raw) else {
            // It parsed when it was recorded; a newer, stricter parser may refuse it now.
            return self.give_up(&row, "the commitment no longer parses");
        };
        info!(id, hotkey = %row.hotkey, url = %parsed.url, attempt = row.attempts + 1, "fetching");
        let fetched = match self.fetcher.fetch(&parsed).await {
            Ok(f) => f,
            Err(e) => {
                Metrics::inc(&self.metrics.fetch_failures);
                return self.failed(&row, &format!("fetch: {e}"), e.is_transient());
            }
        };
        let path = self
            .submissions_dir
            .join(format!("{}.wasm", fetched.sha256));
        write_atomically(&path, &fetched.bytes)
            .with_context(|| format!("cannot keep the component at {}", path.display()))?;
        let validator = self.hotkey.ss58();
        let linked = {
            let mut store = self.store();
            let existing = store
                .read()
                .evaluation_of_submission(&fetched.sha256, &self.competition, Some(&validator))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(evaluation) = existing {
                info!(id, sha256 = %fetched.sha256, evaluation, "already evaluated; linked");
                store
                    .write(|l| l.finish_commitment(id, &fetched.sha256, evaluation))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            existing.is_some()
        };
        if linked {
            self.refresh_gauges();
            return Ok(());
        }
        info!(id, sha256 = %fetched.sha256, device = %self.config.evaluation.device, "evaluating");
        let args = self.bench_args(&path)?;
        self.metrics.evaluation_running.store(1, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || bench::evaluate(&args)).await;
        self.metrics.evaluation_running.store(0, Ordering::Relaxed);
        self.metrics
            .last_evaluation_seconds
            .store(started.elapsed().as_secs(), Ordering::Relaxed);
        let record = match outcome {
            Ok(Ok(record)) => record,
            // The submission's own faults are a rejected record, not an error: an error is
            // the harness's (the device, the disk, a worker that could not start), and worth
            // another try.
            Ok(Err(e)) => {
                return self.failed(&row, &format!("evaluation: {e:#}"), true);
            }
            Err(join) => {
                return self.failed(&row, &format!("evaluation panicked: {join}"), true);
            }
        };
        let meta = EvaluationMeta {
            hotkey: Some(row.hotkey.clone()),
            uid: row.uid,
            block: Some(row.block),
            validator: Some(validator),
        };
        let imported = {
            let mut store = self.store();
            let imported =
                leaderboard::import(&mut store, &record, &meta, &self.config.weights.threshold())
                    .map_err(|e| anyhow::anyhow!("storing the evaluation: {e}"))?;
            store
                .write(|l| l.finish_commitment(id, &fetched.sha256, imported.id))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            imported
        };
        Metrics::inc(&self.metrics.evaluations_done);
        info!(
            id,
            evaluation = imported.id,
            verdict = ?record.verdict,
            mfu = record.score.as_ref().map(|s| s.mfu).unwrap_or(f64::NAN),
            seconds = started.elapsed().as_secs(),
            "evaluated"
        );
        if let Some(change) = imported.leader_change {
            info!(sha256 = %change.sha256, score = change.score, "new leader");
        }
        self.refresh_gauges();
        Ok(())
    }

    fn bench_args(&self, component: &Path) -> anyhow::Result<BenchArgs> {
        let e = &self.config.evaluation;
        let mut argv: Vec<String> = vec![
            "bench".into(),
            component.display().to_string(),
            "--preset".into(),
            e.preset.clone(),
            "--device".into(),
            e.device.clone(),
            "--runs".into(),
            e.runs.to_string(),
            "--warmup".into(),
            e.warmup.to_string(),
            "--json".into(),
        ];
        if let Some(t) = e.threads {
            argv.extend(["--threads".into(), t.to_string()]);
        }
        if let Some(c) = &e.cache {
            argv.extend([
                "--cache".into(),
                super::config::expand_home(c).display().to_string(),
            ]);
        }
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(argv)
            .map_err(|e| crate::InputError(format!("[evaluation] {e}")))?;
        Ok(cli.bench)
    }

    /// A failure: transient ones go back with a backoff until `max_attempts`; fatal ones end
    /// the commitment.
    fn failed(&self, row: &CommitmentRow, reason: &str, transient: bool) -> anyhow::Result<()> {
        let attempt = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
        let e = &self.config.evaluation;
        if transient && attempt < e.max_attempts {
            let wait = backoff(attempt, e.retry_min_s, e.retry_max_s);
            warn!(id = row.id, attempt, retry_in_s = wait.as_secs(), %reason, "transient failure; will retry");
            Metrics::inc(&self.metrics.evaluations_retried);
            self.store()
                .write(|l| l.defer_commitment(row.id, reason, now_unix() + wait.as_secs() as i64))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            self.refresh_gauges();
            return Ok(());
        }
        let reason = if transient {
            format!("{reason} (gave up after {attempt} attempts)")
        } else {
            reason.to_string()
        };
        self.give_up(row, &reason)
    }

    fn give_up(&self, row: &CommitmentRow, reason: &str) -> anyhow::Result<()> {
        error!(id = row.id, hotkey = %row.hotkey, %reason, "commitment refused");
        Metrics::inc(&self.metrics.evaluations_failed);
        self.store()
            .write(|l| l.fail_commitment(row.id, reason))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.refresh_gauges();
        Ok(())
    }

    // ----------------------------------------------------------------- weights

    async fn weights_loop(self: Arc<Self>) -> anyhow::Result<()> {
        let every = Duration::from_secs(self.config.chain.poll_interval_s);
        let interval = self.config.weights.set_weights_interval_blocks;
        // After a failure, wait this many blocks (a tenth of the interval) before trying again.
        let mut not_before = 0u64;
        // Read once: after that, this task is the only one that moves it.
        let mut last = self
            .store()
            .read()
            .state(LAST_WEIGHTS_KEY)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(b) = last {
            self.metrics
                .last_weights_block
                .store(b as i64, Ordering::Relaxed);
        }
        loop {
            tokio::time::sleep(every).await;
            let Some(block) = self.view.read().await.as_ref().map(|m| m.block) else {
                continue;
            };
            if last.is_some_and(|l| block < l + interval) || block < not_before {
                debug!(block, ?last, "weights not due");
                continue;
            }
            match self.set_weights().await {
                Ok(block) => {
                    self.store()
                        .write(|l| l.set_state(LAST_WEIGHTS_KEY, &block.to_string()))
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    last = Some(block);
                    self.metrics
                        .last_weights_block
                        .store(block as i64, Ordering::Relaxed);
                }
                Err(e) => {
                    Metrics::inc(&self.metrics.weights_failed);
                    not_before = block + (interval / 10).max(1);
                    error!(error = %e, retry_at_block = not_before, "setting weights failed");
                }
            }
        }
    }

    async fn set_weights(&self) -> anyhow::Result<u64> {
        let chain = self.chain.get(&self.metrics).await?;
        let params = WeightsParams {
            netuid: self.config.netuid,
            competition: &self.competition,
            threshold: self.config.weights.threshold(),
            burn: self.config.weights.burn(),
            version_key: self.config.weights.version_key,
        };
        // Its own connection, held across the chain calls; only this task uses it.
        let mut store = self.weights_store.lock().await;
        let signer = (!self.config.weights.dry_run).then_some(&self.hotkey);
        match setter::set_weights_once(&chain, &mut store, &params, signer).await {
            Ok(o) => {
                Metrics::inc(&self.metrics.weights_set);
                info!(
                    block = o.block,
                    uids = ?o.uids,
                    weights = ?o.weights_u16,
                    dry_run = o.dry_run,
                    call = %o.call,
                    call_data = %o.call_data,
                    extrinsic = o.inclusion.as_ref().map(|i| i.extrinsic_hash.as_str()).unwrap_or("-"),
                    events = ?o.inclusion.as_ref().map(|i| i.events.iter().map(|e| format!("{}.{}", e.pallet, e.name)).collect::<Vec<_>>()),
                    "weights {}",
                    if o.dry_run { "computed (dry run)" } else { "set" }
                );
                Ok(o.block)
            }
            Err(setter::WeightsError::Chain(e)) => {
                self.chain.failed(&e, &self.metrics).await;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a component
/// under its hash's name.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
