//! The result store from the command line: `crusades results import|list|show`,
//! `crusades leaderboard` and `crusades weights`. The store, the ranking and the weights rule
//! live in crusades-results; this module parses flags, opens the store and prints.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use crusades_results::leaderboard::{self, Imported, Leaderboard, ThresholdRule};
use crusades_results::store::{EvaluationFilter, EvaluationMeta, EvaluationRow, Store, StoreError};
use crusades_results::weights::{self, WeightVector, WeightsEntry, WeightsRule};
use crusades_results::{time, Record, Verdict};

use crate::{bail_input, report, InputError};

/// Where the store lives: `--db`, else `$CRUSADES_DB`, else the user's data directory.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// The results database (SQLite) [default: $CRUSADES_DB, else
    /// $XDG_DATA_HOME/crusades/results.db or ~/.local/share/crusades/results.db].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

pub fn default_db_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CRUSADES_DB").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("crusades").join("results.db")
}

impl StoreArgs {
    pub fn path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(default_db_path)
    }

    /// Opens the store, creating it (and upgrading an older one).
    pub fn open_or_create(&self) -> anyhow::Result<Store> {
        let path = self.path();
        Store::open(&path).map_err(store_error)
    }

    /// Opens a store that must exist already: reading commands never create one.
    pub fn open_existing(&self) -> anyhow::Result<Store> {
        let path = self.path();
        if !path.is_file() {
            bail_input!(
                "no results store at {}: `crusades results import RECORD.json` creates one \
                 (or point --db / $CRUSADES_DB at an existing one)",
                path.display()
            );
        }
        Store::open(&path).map_err(store_error)
    }
}

/// A store error as the CLI reports it: what the user handed in or asked for is exit 2.
pub fn store_error(e: StoreError) -> anyhow::Error {
    if e.is_input_error() {
        anyhow::Error::new(InputError(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}

/// The adaptive threshold's parameters (defaults: Crusades').
#[derive(Args, Clone, Debug)]
pub struct ThresholdArgs {
    /// The threshold's floor, and the T a first leader sets.
    #[arg(long, value_name = "FRACTION", default_value_t = ThresholdRule::default().base)]
    pub threshold_base: f64,
    /// The share of T − base lost per decay interval.
    #[arg(long, value_name = "FRACTION", default_value_t = ThresholdRule::default().decay)]
    pub threshold_decay: f64,
    /// Blocks per decay interval.
    #[arg(long, value_name = "BLOCKS", default_value_t = ThresholdRule::default().interval_blocks)]
    pub threshold_interval: u64,
}

impl ThresholdArgs {
    pub fn rule(&self) -> anyhow::Result<ThresholdRule> {
        let rule = ThresholdRule {
            base: self.threshold_base,
            decay: self.threshold_decay,
            interval_blocks: self.threshold_interval,
        };
        if let Err(why) = rule.check() {
            bail_input!("{why}");
        }
        Ok(rule)
    }
}

/// Where the burn goes (defaults: Crusades').
#[derive(Args, Clone, Debug)]
pub struct BurnArgs {
    /// The uid that receives the burn share, and everything when there is no winner.
    #[arg(long, default_value_t = WeightsRule::default().burn_uid)]
    pub burn_uid: u16,
    /// The share of the weights that goes to the burn uid (0…1).
    #[arg(long, value_name = "FRACTION", default_value_t = WeightsRule::default().burn_rate)]
    pub burn_rate: f64,
}

impl BurnArgs {
    pub fn rule(&self) -> anyhow::Result<WeightsRule> {
        let rule = WeightsRule {
            burn_uid: self.burn_uid,
            burn_rate: self.burn_rate,
        };
        if let Err(why) = rule.check() {
            bail_input!("--burn-rate: {why}");
        }
        Ok(rule)
    }
}

#[derive(Subcommand)]
pub enum ResultsCommand {
    /// Store records written by `crusades bench --out` (or --json); importing one twice
    /// changes nothing. Each import advances its competition's leader.
    Import(ImportArgs),
    /// List the stored evaluations, newest first.
    List(ListArgs),
    /// One evaluation (by id) in full, or a submission (by sha256 prefix) and its evaluations.
    Show(ShowArgs),
    /// The validator's commitments: pending (the queue), done, failed and invalid, with why.
    Commitments(CommitmentsArgs),
}

#[derive(Args)]
pub struct CommitmentsArgs {
    /// Only these: pending, done, failed or invalid.
    #[arg(long, value_parser = ["pending", "done", "failed", "invalid"])]
    pub status: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Record files (JSON).
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The miner's hotkey (SS58), when known.
    #[arg(long)]
    pub hotkey: Option<String>,
    /// The miner's uid [default: the record's workload uid].
    #[arg(long)]
    pub uid: Option<u16>,
    /// The chain block the evaluation belongs to [default: the local block clock at the
    /// record's created_at: unix seconds / 12].
    #[arg(long)]
    pub block: Option<u64>,
    /// Who evaluated (a validator's name or hotkey).
    #[arg(long)]
    pub validator: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub threshold: ThresholdArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this competition (`contract/preset/device`, as `crusades leaderboard` names it).
    #[arg(long)]
    pub competition: Option<String>,
    /// Only this submission (a sha256 prefix).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Only accepted or only rejected evaluations.
    #[arg(long, value_parser = ["accepted", "rejected"])]
    pub verdict: Option<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// An evaluation id, or a submission's sha256 (a prefix of at least 4 hex digits).
    pub key: String,
    /// Ops shown in the profile table.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: ResultsCommand) -> anyhow::Result<()> {
    match command {
        ResultsCommand::Import(args) => import(args),
        ResultsCommand::List(args) => list(args),
        ResultsCommand::Show(args) => show(args),
        ResultsCommand::Commitments(args) => commitments(args),
    }
}

fn commitments(args: CommitmentsArgs) -> anyhow::Result<()> {
    use crusades_results::queue::CommitmentStatus;
    let store = args.store.open_existing()?;
    let status = args
        .status
        .as_deref()
        .map(str::parse::<CommitmentStatus>)
        .transpose()
        .map_err(|e| crate::InputError(e.to_string()))?;
    let ledger = store.read();
    let rows = ledger
        .commitments(status, Some(args.limit))
        .map_err(store_error)?;
    let counts = ledger.commitment_counts().map_err(store_error)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"counts": counts, "commitments": rows})
            )?
        );
        return Ok(());
    }
    println!(
        "{} pending  ·  {} done  ·  {} failed  ·  {} invalid",
        counts.pending, counts.done, counts.failed, counts.invalid
    );
    for r in &rows {
        let what = match (&r.evaluation_id, &r.reason) {
            (Some(e), _) => format!("evaluation #{e}"),
            (None, Some(why)) => why.clone(),
            (None, None) => String::new(),
        };
        println!(
            "  #{:<5} {:<8} block {:>9}  uid {:>5}  {}  {}  {what}",
            r.id,
            r.status,
            r.block,
            r.uid.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
            r.hotkey,
            r.url.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// Reads and parses a record file; either failure is bad input (exit 2) naming the file.
pub fn read_record(path: &Path) -> anyhow::Result<Record> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => bail_input!("cannot read the record {}: {e}", path.display()),
    };
    match Record::from_json(&bytes) {
        Ok(r) => Ok(r),
        Err(e) => bail_input!(
            "{}: {e}. Give a record written by `crusades bench --out`",
            path.display()
        ),
    }
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let rule = args.threshold.rule()?;
    // Every file is read and parsed before the store is touched: a bad file among good ones
    // stores nothing, and says which.
    let mut records = Vec::with_capacity(args.files.len());
    let mut bad = Vec::new();
    for path in &args.files {
        match read_record(path) {
            Ok(r) => records.push((path, r)),
            Err(e) => bad.push(format!("{e:#}")),
        }
    }
    if !bad.is_empty() {
        bail_input!(
            "nothing imported: {} of {} files are not crusades records:\n  {}",
            bad.len(),
            args.files.len(),
            bad.join("\n  ")
        );
    }
    let mut store = args.store.open_or_create()?;
    let meta = EvaluationMeta {
        hotkey: args.hotkey.clone(),
        uid: args.uid,
        block: args.block,
        validator: args.validator.clone(),
    };
    let bar = report::progress(records.len() as u64, "importing");
    let mut done = Vec::with_capacity(records.len());
    for (path, record) in &records {
        let imported = leaderboard::import(&mut store, record, &meta, &rule)
            .map_err(store_error)
            .with_context(|| format!("importing {}", path.display()))?;
        bar.inc(1);
        done.push(imported);
    }
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(());
    }
    for (imported, (path, _)) in done.iter().zip(&records) {
        print_imported(imported, path);
    }
    let fresh = done.iter().filter(|i| !i.duplicate).count();
    println!(
        "{fresh} imported, {} already stored  ·  {}",
        done.len() - fresh,
        args.store.path().display()
    );
    Ok(())
}

fn print_imported(i: &Imported, path: &Path) {
    if i.duplicate {
        println!(
            "  #{:<5} {}  already stored ({})",
            i.id,
            short(&i.sha256),
            path.display()
        );
        return;
    }
    let mut line = format!(
        "  #{:<5} {}  {}  block {}",
        i.id,
        short(&i.sha256),
        i.competition,
        report::count(i.block as f64)
    );
    if i.new_submission {
        line.push_str("  · new submission");
    }
    if let Some(c) = &i.leader_change {
        line.push_str(&format!(
            "  · new leader at {} (T {})",
            report::percent(c.score),
            report::percent(c.threshold)
        ));
    }
    println!("{line}");
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = args.store.open_existing()?;
    let filter = EvaluationFilter {
        sha256_prefix: args.sha256.clone(),
        competition: args.competition.clone(),
        verdict: args.verdict.as_deref().map(|v| match v {
            "accepted" => Verdict::Accepted,
            _ => Verdict::Rejected,
        }),
        limit: Some(args.limit),
    };
    let rows = store.read().evaluations(&filter).map_err(store_error)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no evaluations match ({})", args.store.path().display());
        return Ok(());
    }
    print_rows(&rows);
    Ok(())
}

fn print_rows(rows: &[EvaluationRow]) {
    println!(
        "{:>6}  {:<12}  {:>5}  {:<18}  {:<22}  {:>7}  {:<20}  created",
        "id", "submission", "uid", "competition", "verdict", "MFU", "hardware"
    );
    for r in rows {
        let verdict = match (&r.verdict, &r.error_code) {
            (Verdict::Accepted, _) => "accepted".to_string(),
            (Verdict::Rejected, Some(code)) => format!("rejected {code}"),
            (Verdict::Rejected, None) => "rejected".to_string(),
        };
        println!(
            "{:>6}  {:<12}  {:>5}  {:<18}  {:<22}  {:>7}  {:<20}  {}",
            r.id,
            short(&r.sha256),
            r.uid.map_or("-".into(), |u| u.to_string()),
            r.competition,
            verdict,
            r.score.map_or("-".into(), report::percent),
            truncate(&r.hardware, 20),
            r.created_at
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let store = args.store.open_existing()?;
    let ledger = store.read();
    let rows = ledger.resolve(&args.key).map_err(store_error)?;
    // An id, or a submission with a single evaluation, shows that evaluation in full.
    let by_id = args.key.chars().all(|c| c.is_ascii_digit());
    if by_id || rows.len() == 1 {
        let id = rows.first().map(|r| r.id).unwrap_or_default();
        let Some(stored) = ledger.evaluation(id).map_err(store_error)? else {
            bail_input!("no evaluation {id}; `crusades results list` shows them");
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&stored)?);
        } else {
            let r = &stored.row;
            println!(
                "Evaluation #{}  ·  {}  ·  block {}  ·  uid {}  ·  hotkey {}  ·  validator {}\n",
                r.id,
                r.competition,
                r.block,
                r.uid.map_or("-".into(), |u| u.to_string()),
                r.hotkey.as_deref().unwrap_or("-"),
                r.validator.as_deref().unwrap_or("-")
            );
            super::bench::print_human(&stored.record, args.top, None);
        }
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let sha = &rows[0].sha256;
    println!("Submission {sha}");
    // Scores compare only within a competition, so the medians are per competition.
    let mut competitions: Vec<&str> = rows.iter().map(|r| r.competition.as_str()).collect();
    competitions.sort_unstable();
    competitions.dedup();
    for competition in competitions {
        let of: Vec<&EvaluationRow> = rows
            .iter()
            .filter(|r| r.competition == competition)
            .collect();
        let scores: Vec<f64> = of
            .iter()
            .filter(|r| r.verdict == Verdict::Accepted)
            .filter_map(|r| r.score)
            .collect();
        println!(
            "           {competition}: {} evaluations, {} accepted{}",
            of.len(),
            scores.len(),
            leaderboard::median(&scores)
                .map(|m| format!(", median MFU {}", report::percent(m)))
                .unwrap_or_default()
        );
    }
    println!();
    print_rows(&rows);
    println!("\n`crusades results show ID` shows one in full.");
    Ok(())
}

#[derive(Args)]
pub struct LeaderboardArgs {
    /// The competition (`contract/preset/device`) [default: the latest evaluated].
    #[arg(long)]
    pub competition: Option<String>,
    /// The block to evaluate T's decay at [default: the local block clock now].
    #[arg(long)]
    pub block: Option<u64>,
    #[command(flatten)]
    pub threshold: ThresholdArgs,
    #[command(flatten)]
    pub burn: BurnArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WeightsArgs {
    #[command(flatten)]
    pub board: LeaderboardArgs,
    /// Keep the result: store the leader state as of --block and add the vector to the
    /// weights history (what a validator does when it sets weights).
    #[arg(long)]
    pub record: bool,
}

/// The competition to show: the one asked for (which must exist), else the latest.
pub fn pick_competition(store: &Store, asked: Option<&str>) -> anyhow::Result<String> {
    let known = store.read().competitions().map_err(store_error)?;
    match asked {
        Some(c) if known.iter().any(|k| k.competition == c) => Ok(c.to_string()),
        Some(c) => bail_input!(
            "no evaluations in competition {c:?}; the store has: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known
                    .iter()
                    .map(|k| k.competition.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        None => match known.first() {
            Some(k) => Ok(k.competition.clone()),
            None => bail_input!(
                "the store has no evaluations yet: `crusades results import RECORD.json` adds some"
            ),
        },
    }
}

#[derive(Serialize)]
struct BoardReport<'a> {
    leaderboard: &'a Leaderboard,
    weights: &'a WeightVector,
}

pub fn leaderboard_command(args: LeaderboardArgs) -> anyhow::Result<()> {
    let (board, vector) = compute(&args, false)?;
    if args.json {
        let out = BoardReport {
            leaderboard: &board,
            weights: &vector,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print_board(&board);
    println!();
    print_weights(&board, &vector);
    Ok(())
}

fn compute(args: &LeaderboardArgs, keep: bool) -> anyhow::Result<(Leaderboard, WeightVector)> {
    let rule = args.threshold.rule()?;
    let burn = args.burn.rule()?;
    let mut store = args.store.open_existing()?;
    let competition = pick_competition(&store, args.competition.as_deref())?;
    let block = args.block.unwrap_or_else(time::current_block);
    let board = if keep {
        if let Some(kept) = store.read().leader(&competition).map_err(store_error)? {
            if block < kept.crowned_block {
                bail_input!(
                    "--block {block} is before the leader was crowned (block {}): a kept state \
                     only moves forward; drop --record to look at an earlier block",
                    kept.crowned_block
                );
            }
        }
        leaderboard::settle(&mut store, &competition, block, &rule).map_err(store_error)?
    } else {
        leaderboard::leaderboard(&store.read(), &competition, block, &rule).map_err(store_error)?
    };
    let vector = weights::weights_for(&board, &burn);
    if keep {
        let entry = WeightsEntry::new(&board, &vector, "computed");
        store
            .write(|ledger| ledger.append_weights(&entry))
            .map_err(store_error)?;
    }
    Ok((board, vector))
}

fn print_board(b: &Leaderboard) {
    println!(
        "Leaderboard  {}  ·  block {}  ·  T {} (base {}, −{} of the excess per {} blocks)",
        b.competition,
        report::count(b.block as f64),
        report::percent(b.threshold),
        report::percent(b.rule.base),
        report::percent(b.rule.decay),
        b.rule.interval_blocks
    );
    match (&b.leader, b.to_beat) {
        (Some(l), Some(to_beat)) => {
            println!(
                "Leader       {}  {}  (crowned at block {}, T set to {})",
                short(&l.sha256),
                report::percent(l.score),
                report::count(l.crowned_block as f64),
                report::percent(l.threshold)
            );
            println!(
                "MFU to beat  {}  = {} × (1 + {})",
                report::percent(to_beat),
                report::percent(l.score),
                report::percent(b.threshold)
            );
        }
        _ => println!("Leader       none yet: the first accepted submission leads"),
    }
    if b.standings.is_empty() {
        println!(
            "\nno accepted submissions ({} evaluated, none accepted)",
            b.unranked
        );
        return;
    }
    println!(
        "\n{:>3}  {:<13}  {:>5}  {:<14}  {:>7}  {:>5}  {:<17}  first seen",
        "#", "submission", "uid", "hotkey", "MFU", "evals", "range"
    );
    for s in &b.standings {
        println!(
            "{:>3}  {}{:<12}  {:>5}  {:<14}  {:>7}  {:>5}  {:<17}  {}",
            s.rank,
            if s.leader { "★" } else { " " },
            short(&s.sha256),
            s.uid.map_or("-".into(), |u| u.to_string()),
            truncate(s.hotkey.as_deref().unwrap_or("-"), 14),
            report::percent(s.score),
            format!("{}/{}", s.accepted, s.evaluations),
            format!(
                "{} … {}",
                report::percent(s.score_min),
                report::percent(s.score_max)
            ),
            s.first_seen_at
        );
    }
    if b.unranked > 0 {
        println!("({} more evaluated but never accepted)", b.unranked);
    }
    println!("★ leader; MFU is the median over a submission's accepted evaluations");
}

fn print_weights(b: &Leaderboard, v: &WeightVector) {
    let parts: Vec<String> = v
        .uids
        .iter()
        .zip(&v.weights)
        .map(|(u, w)| format!("uid {u} → {w:.4}"))
        .collect();
    println!(
        "Weights at block {}: {}",
        report::count(b.block as f64),
        parts.join(", ")
    );
    if let Some(note) = &v.note {
        println!("             {note}");
    }
}

pub fn weights_command(args: WeightsArgs) -> anyhow::Result<()> {
    let (board, vector) = compute(&args.board, args.record)?;
    if args.board.json {
        #[derive(Serialize)]
        struct Out<'a> {
            competition: &'a str,
            block: u64,
            threshold: f64,
            to_beat: Option<f64>,
            leader: Option<&'a leaderboard::LeaderState>,
            weights: &'a WeightVector,
            recorded: bool,
        }
        let out = Out {
            competition: &board.competition,
            block: board.block,
            threshold: board.threshold,
            to_beat: board.to_beat,
            leader: board.leader.as_ref(),
            weights: &vector,
            recorded: args.record,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}  ·  block {}  ·  T {}{}",
        board.competition,
        report::count(board.block as f64),
        report::percent(board.threshold),
        board
            .to_beat
            .map(|t| format!("  ·  MFU to beat {}", report::percent(t)))
            .unwrap_or_default()
    );
    print_weights(&board, &vector);
    if args.record {
        println!("recorded in the weights history");
    }
    Ok(())
}
