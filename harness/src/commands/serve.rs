//! `crusades serve`: the dashboard and its JSON API, over the result store.
//!
//! ```text
//! crusades serve [--db PATH] [--addr 127.0.0.1:8080] [--burn-uid 1 --burn-rate 0.95]
//!                [--threshold-base 0.01 --threshold-decay 0.05 --threshold-interval 100]
//! ```
//!
//! It binds only where told (loopback by default), prints `listening on http://ADDR/` with the
//! port actually bound (so `--addr 127.0.0.1:0` works), and stops on Ctrl-C or SIGTERM. It
//! never changes what the store holds (the leaderboard is computed as of the asked block in
//! memory, as `crusades leaderboard` does), so it can run beside a validator that writes; it
//! refuses to start on a store that does not exist (exit 2).
//!
//! # JSON API
//!
//! Every answer is JSON (`application/json`). A bad query (an unknown parameter, a number that
//! is not one) is `400 {"error": "…"}`, an unknown id or competition `404 {"error": "…"}`, a
//! store failure `500 {"error": "…"}`. Scores and MFU are fractions (0.138, not 13.8 %);
//! times are RFC 3339 UTC; blocks are chain blocks (the local block clock, unix seconds / 12,
//! when none is given).
//!
//! | Endpoint | Answer |
//! |---|---|
//! | `GET /api` | this list |
//! | `GET /api/competitions` | `{competitions: [{competition, evaluations, latest_at}], default, block}`: `default` is the competition evaluated most recently, `block` the current block |
//! | `GET /api/leaderboard?competition=C&block=N` | the leaderboard of C (default: `default`) as of block N (default: now): `{competition, block, rule, threshold, leader, to_beat, standings: [{rank, sha256, hotkey, uid, score, accepted, evaluations, score_min, score_max, first_seen_block, first_seen_at, leader}], unranked, weights: {uids, weights, winner_sha256, note}, weights_rule: {burn_uid, burn_rate}}` |
//! | `GET /api/submissions?competition=C` | `{submissions: [...]}`: every submission the store knows (in C) |
//! | `GET /api/evaluations?sha256=PREFIX&competition=C&verdict=accepted\|rejected&limit=N` | `{evaluations: [{id, sha256, hotkey, uid, competition, workload_hash, preset, device, verdict, error_code, score, hardware, harness_version, created_at, block, validator}]}`, newest first; `limit` 1…1000, default 100 |
//! | `GET /api/evaluations/{id}` | `{evaluation: ROW, record: RECORD}`: the row as above and the full result record (summary, score, gates, per-op profile, hardware, runs) |
//! | `GET /api/history?competition=C` | MFU over time: `{competition, points: [{id, created_at, block, sha256, score}] (accepted evaluations, oldest first), leader_changes: [{block, at, sha256, score, previous_sha256, previous_score, threshold}]}` |
//! | `GET /api/weights?competition=C&block=N&limit=N` | `{competition, block, rule, current: {uids, weights, winner_sha256, note}, history: [{id, block, at, uids, weights, leader_sha256, threshold, source}]}` (newest first, `limit` default 50) |
//!
//! A submission's code is never served: the API and the dashboard name submissions by their
//! sha256 (a record holds the component's size and where it was read from, not its bytes).
//!
//! # The dashboard
//!
//! `GET /` is a single page (`harness/web/`: index.html, app.js, style.css, embedded in the
//! binary) with hash routes: `#/` the leaderboard, the MFU to beat, a chart of MFU over time
//! and the recent evaluations; `#/evaluation/ID` one evaluation's summary, gates and per-op
//! profile. Every response carries `Content-Security-Policy: default-src 'self'` (and more):
//! nothing is loaded from elsewhere and no inline script runs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crusades_results::leaderboard::{self, ThresholdRule};
use crusades_results::store::{EvaluationFilter, Ledger, Store, StoreError};
use crusades_results::weights::{weights_for, WeightsRule};
use crusades_results::Verdict;

use super::results::{BurnArgs, StoreArgs, ThresholdArgs};

/// The page and its assets, embedded: the binary serves them with nothing on disk.
const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
const FAVICON_SVG: &str = include_str!("../../web/favicon.svg");

/// On every response. `default-src 'self'`: scripts, styles, images and fetches only from
/// this server, and no inline script or style; the rest forbids framing, `<base>` and forms.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
const DEFAULT_WEIGHTS_LIMIT: u32 = 50;

/// Flags of `crusades serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The address to listen on. Port 0 picks a free port; the line printed at start says
    /// which.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub threshold: ThresholdArgs,
    #[command(flatten)]
    pub burn: BurnArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let threshold = args.threshold.rule()?;
    let weights = args.burn.rule()?;
    let db = args.store.path();
    let store = args.store.open_existing()?;
    let state = Arc::new(AppState {
        store: Mutex::new(store),
        threshold,
        weights,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(state, args.addr, &db))
}

async fn serve(state: Arc<AppState>, addr: SocketAddr, db: &FsPath) -> anyhow::Result<()> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            crate::bail_input!("--addr {addr}: the address is in use; pick another port")
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            crate::bail_input!("--addr {addr}: not an address of this machine")
        }
        Err(e) => return Err(anyhow::anyhow!("listening on {addr}: {e}")),
    };
    let bound = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{bound}/")?;
        out.flush()?;
    }
    eprintln!(
        "serving the dashboard and its JSON API over {} (Ctrl-C stops)",
        db.display()
    );
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// The dashboard and its JSON API over `store`, for a server other than `crusades serve`'s
/// own (the validator serves it beside `/metrics`).
pub fn dashboard(store: Store, threshold: ThresholdRule, weights: WeightsRule) -> Router {
    router(Arc::new(AppState {
        store: Mutex::new(store),
        threshold,
        weights,
    }))
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

struct AppState {
    /// One connection, one request at a time: rusqlite connections are Send but not Sync,
    /// and a dashboard's reads are short.
    store: Mutex<Store>,
    threshold: ThresholdRule,
    weights: WeightsRule,
}

type Shared = Arc<AppState>;

fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .route("/api", get(api_index))
        .route("/api/", get(api_index))
        .route("/api/competitions", get(competitions))
        .route("/api/leaderboard", get(leaderboard_handler))
        .route("/api/submissions", get(submissions))
        .route("/api/evaluations", get(evaluations))
        .route("/api/evaluations/{id}", get(evaluation))
        .route("/api/history", get(history))
        .route("/api/weights", get(weights_handler))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

// ------------------------------------------------------------------------------- assets

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

async fn not_found(uri: Uri) -> Response {
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        ApiError::NotFound(format!(
            "no such endpoint: {} (GET /api lists them)",
            uri.path()
        ))
        .into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found: the dashboard is at /\n",
        )
            .into_response()
    }
}

// ------------------------------------------------------------------------------- errors

#[derive(Debug)]
enum ApiError {
    BadRequest(String),
    NotFound(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::NotFound(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Runs `f` on the store's connection, off the async workers.
async fn with_ledger<F>(state: Shared, f: F) -> ApiResult
where
    F: FnOnce(&AppState, &Ledger<'_>) -> Result<Value, ApiError> + Send + 'static,
{
    let joined = tokio::task::spawn_blocking(move || {
        let store = state.store.lock().unwrap_or_else(|e| e.into_inner());
        let ledger = store.read();
        f(&state, &ledger)
    })
    .await;
    match joined {
        Ok(r) => r.map(Json),
        Err(e) => Err(ApiError::Internal(format!("the request failed: {e}"))),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(format!("serialising: {e}")))
}

// ------------------------------------------------------------------------------- queries

/// A request's query parameters, checked against the names an endpoint takes.
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Params, ApiError> {
        let Query(pairs) = query
            .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))?;
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {k:?}; this endpoint takes {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {k:?} is given twice"
                )));
            }
        }
        Ok(Params(map))
    }

    /// A non-empty string parameter.
    fn text(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.is_empty()).cloned()
    }

    fn number<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<Option<T>, ApiError> {
        match self.text(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("{key}={v:?} is not {what}"))),
        }
    }

    fn limit(&self, default: u32) -> Result<u32, ApiError> {
        let limit = self
            .number::<u32>("limit", "a whole number")?
            .unwrap_or(default);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit={limit} is out of range 1…{MAX_LIMIT}"
            )));
        }
        Ok(limit)
    }

    fn block(&self) -> Result<u64, ApiError> {
        Ok(self
            .number::<u64>("block", "a block number")?
            .unwrap_or_else(crusades_results::time::current_block))
    }
}

/// The competition asked for, else the one evaluated most recently; 404 when the store has
/// none or does not know the one asked for.
fn competition(ledger: &Ledger<'_>, asked: Option<String>) -> Result<String, ApiError> {
    let known = ledger.competitions()?;
    match asked {
        Some(c) if known.iter().any(|k| k.competition == c) => Ok(c),
        Some(c) => Err(ApiError::NotFound(format!(
            "unknown competition {c:?}; GET /api/competitions lists them"
        ))),
        None => latest_competition(&known).ok_or_else(|| {
            ApiError::NotFound(
                "the store holds no evaluation yet (import some with `crusades results import`)"
                    .into(),
            )
        }),
    }
}

/// The store lists competitions newest first, so the latest is the first.
fn latest_competition(known: &[crusades_results::store::CompetitionRow]) -> Option<String> {
    known.first().map(|r| r.competition.clone())
}

// ------------------------------------------------------------------------------- handlers

async fn api_index(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> ApiResult {
    Params::parse(query, &[])?;
    Ok(Json(json!({
        "endpoints": [
            "GET /api/competitions",
            "GET /api/leaderboard?competition=C&block=N",
            "GET /api/submissions?competition=C",
            "GET /api/evaluations?sha256=PREFIX&competition=C&verdict=accepted|rejected&limit=N",
            "GET /api/evaluations/{id}",
            "GET /api/history?competition=C",
            "GET /api/weights?competition=C&block=N&limit=N",
        ],
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

async fn competitions(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    Params::parse(query, &[])?;
    with_ledger(state, |_, ledger| {
        let known = ledger.competitions()?;
        Ok(json!({
            "default": latest_competition(&known),
            "block": crusades_results::time::current_block(),
            "competitions": to_json(&known)?,
        }))
    })
    .await
}

async fn leaderboard_handler(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::parse(query, &["competition", "block"])?;
    let block = p.block()?;
    with_ledger(state, move |st, ledger| {
        let c = competition(ledger, p.text("competition"))?;
        let board = leaderboard::leaderboard(ledger, &c, block, &st.threshold)?;
        let weights = weights_for(&board, &st.weights);
        let mut v = to_json(&board)?;
        v["weights"] = to_json(&weights)?;
        v["weights_rule"] = to_json(&st.weights)?;
        Ok(v)
    })
    .await
}

async fn submissions(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::parse(query, &["competition"])?;
    with_ledger(state, move |_, ledger| {
        let c = match p.text("competition") {
            Some(c) => Some(competition(ledger, Some(c))?),
            None => None,
        };
        Ok(json!({ "submissions": to_json(&ledger.submissions(c.as_deref())?)? }))
    })
    .await
}

async fn evaluations(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::parse(query, &["sha256", "competition", "verdict", "limit"])?;
    let sha256 = p.text("sha256").map(|s| s.to_ascii_lowercase());
    if let Some(s) = &sha256 {
        if s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::BadRequest(format!(
                "sha256={s:?} is not a hex prefix of a sha256"
            )));
        }
    }
    let verdict = match p.text("verdict").as_deref() {
        None => None,
        Some("accepted") => Some(Verdict::Accepted),
        Some("rejected") => Some(Verdict::Rejected),
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "verdict={v:?}: expected accepted or rejected"
            )))
        }
    };
    let limit = p.limit(DEFAULT_LIMIT)?;
    let competition = p.text("competition");
    with_ledger(state, move |_, ledger| {
        let filter = EvaluationFilter {
            sha256_prefix: sha256,
            competition,
            verdict,
            limit: Some(limit as usize),
        };
        Ok(json!({ "evaluations": to_json(&ledger.evaluations(&filter)?)? }))
    })
    .await
}

async fn evaluation(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    Params::parse(query, &[])?;
    let Path(raw) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let id: i64 = raw
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("evaluation id {raw:?} is not a number")))?;
    with_ledger(state, move |_, ledger| {
        let stored = ledger
            .evaluation(id)?
            .ok_or_else(|| ApiError::NotFound(format!("no evaluation #{id} in the store")))?;
        Ok(json!({
            "evaluation": to_json(&stored.row)?,
            "record": to_json(&stored.record)?,
        }))
    })
    .await
}

async fn history(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::parse(query, &["competition"])?;
    with_ledger(state, move |_, ledger| {
        let c = competition(ledger, p.text("competition"))?;
        let filter = EvaluationFilter {
            sha256_prefix: None,
            competition: Some(c.clone()),
            verdict: Some(Verdict::Accepted),
            limit: None,
        };
        let mut rows = ledger.evaluations(&filter)?;
        rows.reverse();
        let points: Vec<Value> = rows
            .iter()
            .filter_map(|r| {
                r.score.map(|score| {
                    json!({
                        "id": r.id,
                        "created_at": r.created_at,
                        "block": r.block,
                        "sha256": r.sha256,
                        "score": score,
                    })
                })
            })
            .collect();
        Ok(json!({
            "competition": c,
            "points": points,
            "leader_changes": to_json(&ledger.leader_changes(&c)?)?,
        }))
    })
    .await
}

async fn weights_handler(
    State(state): State<Shared>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::parse(query, &["competition", "block", "limit"])?;
    let block = p.block()?;
    let limit = p.limit(DEFAULT_WEIGHTS_LIMIT)?;
    with_ledger(state, move |st, ledger| {
        let c = competition(ledger, p.text("competition"))?;
        let board = leaderboard::leaderboard(ledger, &c, block, &st.threshold)?;
        let current = weights_for(&board, &st.weights);
        let history = ledger.weights_history(Some(&c), limit as usize)?;
        Ok(json!({
            "competition": c,
            "block": block,
            "rule": to_json(&st.weights)?,
            "current": to_json(&current)?,
            "history": to_json(&history)?,
        }))
    })
    .await
}
