//! `validator.toml`: every key, its default, and the checks made before the daemon starts.
//! The README's validator section quotes [`EXAMPLE`], and a test parses it, so the two agree.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crusades_results::leaderboard::ThresholdRule;
use crusades_results::weights::WeightsRule;
use serde::Deserialize;

use super::fetch::FetchPolicy;
use crate::chain::keys::KeySource;

/// The documented example: every key, set to its default (the wallet and the commitments
/// file are the only keys without one).
pub const EXAMPLE: &str = include_str!("validator.example.toml");

pub const DEFAULT_URL: &str = "wss://entrypoint-finney.opentensor.ai:443";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The subnet (Templar is 3).
    #[serde(default = "default_netuid")]
    pub netuid: u16,
    /// The result store [default: as `crusades results`: $CRUSADES_DB, else the XDG data dir].
    pub store: Option<PathBuf>,
    #[serde(default)]
    pub chain: ChainConfig,
    #[serde(default)]
    pub wallet: WalletConfig,
    #[serde(default)]
    pub commitments: CommitmentsConfig,
    #[serde(default)]
    pub fetch: FetchConfig,
    #[serde(default)]
    pub evaluation: EvaluationConfig,
    #[serde(default)]
    pub weights: WeightsConfig,
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_netuid() -> u16 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainConfig {
    pub url: String,
    /// Each RPC call's limit.
    pub timeout_s: u64,
    /// How often the chain is read for the block height and new commitments.
    pub poll_interval_s: u64,
    /// The first wait before reconnecting after an RPC failure; it doubles up to the max.
    pub reconnect_min_s: u64,
    pub reconnect_max_s: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            url: DEFAULT_URL.into(),
            timeout_s: 30,
            poll_interval_s: 12,
            reconnect_min_s: 2,
            reconnect_max_s: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalletConfig {
    pub name: String,
    pub hotkey: String,
    /// The wallets directory [default: $BT_WALLET_PATH or ~/.bittensor/wallets].
    pub path: Option<PathBuf>,
    /// A dev URI (`//Alice`) instead of a wallet, for local chains.
    pub uri: Option<String>,
}

impl Default for WalletConfig {
    fn default() -> Self {
        WalletConfig {
            name: "default".into(),
            hotkey: "default".into(),
            path: None,
            uri: None,
        }
    }
}

impl WalletConfig {
    pub fn source(&self) -> KeySource {
        match &self.uri {
            Some(uri) => KeySource::Uri(uri.clone().into()),
            None => KeySource::Wallet {
                wallets: self
                    .path
                    .as_deref()
                    .map(expand_home)
                    .unwrap_or_else(KeySource::default_wallets_dir),
                name: self.name.clone(),
                hotkey: self.hotkey.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitmentsConfig {
    /// Read commitments from this JSON file instead of the chain's Commitments pallet (a
    /// local source in the same format, for tests and for runtimes without the pallet).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    pub max_bytes: u64,
    pub timeout_s: u64,
    pub connect_timeout_s: u64,
    pub max_redirects: usize,
    /// Allow URLs on 127.0.0.0/8 and ::1 (tests only; private ranges stay refused).
    pub allow_loopback: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        let p = FetchPolicy::default();
        FetchConfig {
            max_bytes: p.max_bytes,
            timeout_s: p.timeout.as_secs(),
            connect_timeout_s: p.connect_timeout.as_secs(),
            max_redirects: p.max_redirects,
            allow_loopback: p.allow_loopback,
        }
    }
}

impl FetchConfig {
    pub fn policy(&self) -> FetchPolicy {
        FetchPolicy {
            max_bytes: self.max_bytes,
            timeout: Duration::from_secs(self.timeout_s),
            connect_timeout: Duration::from_secs(self.connect_timeout_s),
            max_redirects: self.max_redirects,
            allow_loopback: self.allow_loopback,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationConfig {
    /// cpu, cuda or cuda:N: the device evaluations run on (one at a time).
    pub device: String,
    /// The workload preset: it and the device kind name the competition.
    pub preset: String,
    pub runs: usize,
    pub warmup: usize,
    /// libtorch intra-op threads in the workers [default: libtorch's choice].
    pub threads: Option<usize>,
    /// The bench cache [default: $CRUSADES_CACHE or ~/.cache/crusades].
    pub cache: Option<PathBuf>,
    /// Where fetched components are kept, by sha256 [default: `submissions/` beside the store].
    pub submissions_dir: Option<PathBuf>,
    /// Tries before a transiently failing submission is given up.
    pub max_attempts: u32,
    /// The first wait before a retry; it doubles each time up to the max.
    pub retry_min_s: u64,
    pub retry_max_s: u64,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            device: "cuda".into(),
            preset: "tiny".into(),
            runs: 3,
            warmup: 1,
            threads: None,
            cache: None,
            submissions_dir: None,
            max_attempts: 5,
            retry_min_s: 60,
            retry_max_s: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeightsConfig {
    /// Blocks between two `set_weights` (Bittensor's rate limit on SN3 is 100 blocks).
    pub set_weights_interval_blocks: u64,
    pub version_key: u64,
    /// Compute and record the weights but sign nothing.
    pub dry_run: bool,
    pub burn_uid: u16,
    pub burn_rate: f64,
    pub threshold_base: f64,
    pub threshold_decay: f64,
    pub threshold_interval_blocks: u64,
}

impl Default for WeightsConfig {
    fn default() -> Self {
        let burn = WeightsRule::default();
        let threshold = ThresholdRule::default();
        WeightsConfig {
            set_weights_interval_blocks: 100,
            version_key: 0,
            dry_run: false,
            burn_uid: burn.burn_uid,
            burn_rate: burn.burn_rate,
            threshold_base: threshold.base,
            threshold_decay: threshold.decay,
            threshold_interval_blocks: threshold.interval_blocks,
        }
    }
}

impl WeightsConfig {
    pub fn burn(&self) -> WeightsRule {
        WeightsRule {
            burn_uid: self.burn_uid,
            burn_rate: self.burn_rate,
        }
    }

    pub fn threshold(&self) -> ThresholdRule {
        ThresholdRule {
            base: self.threshold_base,
            decay: self.threshold_decay,
            interval_blocks: self.threshold_interval_blocks,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `/metrics` (and the dashboard) are served; an empty string serves nothing.
    pub listen: String,
    /// Serve `crusades serve`'s dashboard and JSON API beside `/metrics`.
    pub dashboard: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9616".into(),
            dashboard: true,
        }
    }
}

impl HttpConfig {
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            format!(
                "[http] listen = {:?} is not IP:PORT (e.g. 127.0.0.1:9616), or \"\" for none",
                self.listen
            )
        })
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        if let Some(f) = &config.commitments.file {
            config.commitments.file = Some(expand_home(f));
        }
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let nonzero = |v: u64, key: &str| {
            if v == 0 {
                Err(format!("{key} must be at least 1"))
            } else {
                Ok(())
            }
        };
        nonzero(self.chain.timeout_s, "[chain] timeout_s")?;
        nonzero(self.chain.poll_interval_s, "[chain] poll_interval_s")?;
        nonzero(self.chain.reconnect_min_s, "[chain] reconnect_min_s")?;
        nonzero(self.fetch.timeout_s, "[fetch] timeout_s")?;
        nonzero(self.fetch.connect_timeout_s, "[fetch] connect_timeout_s")?;
        nonzero(self.fetch.max_bytes, "[fetch] max_bytes")?;
        nonzero(self.evaluation.runs as u64, "[evaluation] runs")?;
        nonzero(
            self.evaluation.max_attempts.into(),
            "[evaluation] max_attempts",
        )?;
        nonzero(
            self.weights.set_weights_interval_blocks,
            "[weights] set_weights_interval_blocks",
        )?;
        if self.chain.reconnect_max_s < self.chain.reconnect_min_s {
            return Err("[chain] reconnect_max_s must be ≥ reconnect_min_s".into());
        }
        if self.evaluation.retry_max_s < self.evaluation.retry_min_s {
            return Err("[evaluation] retry_max_s must be ≥ retry_min_s".into());
        }
        self.weights
            .burn()
            .check()
            .map_err(|e| format!("[weights] {e}"))?;
        self.weights
            .threshold()
            .check()
            .map_err(|e| format!("[weights] {e}"))?;
        self.http.addr()?;
        let url = url::Url::parse(&self.chain.url)
            .map_err(|_| format!("[chain] url = {:?} is not a URL", self.chain.url))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(format!(
                "[chain] url = {:?}: use ws:// or wss://",
                self.chain.url
            ));
        }
        Ok(())
    }
}

/// `~/x` → `$HOME/x`: config files are written by hand.
pub fn expand_home(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| path.to_path_buf()),
        Err(_) => path.to_path_buf(),
    }
}

/// Exponential backoff: `min·2^(attempt−1)`, capped at `max`.
pub fn backoff(attempt: u32, min_s: u64, max_s: u64) -> Duration {
    let factor = 1u64 << attempt.saturating_sub(1).min(30);
    Duration::from_secs(min_s.saturating_mul(factor).min(max_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_every_default() {
        let example = Config::parse(EXAMPLE).unwrap();
        let empty = Config::parse("").unwrap();
        assert_eq!(format!("{example:?}"), format!("{empty:?}"));
    }

    #[test]
    fn the_readme_quotes_the_example() {
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(EXAMPLE.trim_end()),
            "README.md's validator section must quote validator.example.toml verbatim"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Config::parse("[chain]\nurll = \"ws://x\"").unwrap_err();
        assert!(err.contains("urll"), "{err}");
        let err = Config::parse("[chain]\nurl = \"http://x\"").unwrap_err();
        assert!(err.contains("ws://"), "{err}");
        let err = Config::parse("[weights]\nburn_rate = 2.0").unwrap_err();
        assert!(err.contains("burn rate"), "{err}");
        let err = Config::parse("[weights]\nset_weights_interval_blocks = 0").unwrap_err();
        assert!(err.contains("set_weights_interval_blocks"), "{err}");
        let err = Config::parse("[http]\nlisten = \"nowhere\"").unwrap_err();
        assert!(err.contains("IP:PORT"), "{err}");
        assert!(Config::parse("[http]\nlisten = \"\"")
            .unwrap()
            .http
            .addr()
            .unwrap()
            .is_none());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = |a| backoff(a, 60, 3600).as_secs();
        assert_eq!((s(1), s(2), s(3), s(7), s(40)), (60, 120, 240, 3600, 3600));
    }
}
