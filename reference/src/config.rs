//! Workload configuration: the presets of WORKLOAD.md, the Templar v0.3.10 hyper-parameters,
//! and the workload hash that names a workload everywhere.
//!
//! This file is the one source of these defaults; the README and `--help` quote it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The decoder's shape and the window's batch geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab: i64,
    pub d_model: i64,
    pub layers: i64,
    pub heads: i64,
    pub kv_heads: i64,
    pub ffn: i64,
    /// Sequence length T: a sequence is T inputs and T labels (T+1 tokens).
    pub seq_len: i64,
}

impl ModelConfig {
    pub fn head_dim(&self) -> i64 {
        self.d_model / self.heads
    }
}

/// Templar v0.3.10's optimiser and compressor settings (WORKLOAD.md, "Hyper-parameters").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HyperParams {
    /// η, constant over the windows.
    pub lr: f64,
    /// λ, decoupled weight decay.
    pub weight_decay: f64,
    /// β, momentum decay.
    pub momentum_decay: f64,
    /// Chunk target: each dimension is cut into chunks of its largest divisor ≤ this.
    pub chunk: i64,
    /// Coefficients kept per chunk (capped at the chunk's size).
    pub topk: i64,
    /// Quantisation bins.
    pub bins: i64,
    /// The quantisation range, in standard deviations of the selected values.
    pub quant_range_sigmas: f64,
    /// Step factor of Templar's validator check (applied to η).
    pub eval_lr_factor: f64,
}

impl Default for HyperParams {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            weight_decay: 0.1,
            momentum_decay: 0.999,
            chunk: 64,
            topk: 32,
            bins: 256,
            quant_range_sigmas: 6.0,
            eval_lr_factor: 0.2,
        }
    }
}

/// Where the tokens come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CorpusSpec {
    /// The learnable Markov stream of `corpus.rs`, generated from `seed`.
    Synthetic { seed: u64, pages: u64 },
    /// A flat token file, named by its content hash (the path is not part of its identity).
    File {
        sha256: String,
        dtype: String,
        tokens: u64,
    },
}

/// One preset row of WORKLOAD.md.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub model: ModelConfig,
    pub seqs_per_window: i64,
    pub windows: u64,
    pub peers: u64,
}

const fn preset(
    name: &'static str,
    [vocab, d_model, layers, heads, kv_heads, ffn, seq_len, seqs, windows, peers]: [i64; 10],
) -> Preset {
    Preset {
        name,
        model: ModelConfig {
            vocab,
            d_model,
            layers,
            heads,
            kv_heads,
            ffn,
            seq_len,
        },
        seqs_per_window: seqs,
        windows: windows as u64,
        peers: peers as u64,
    }
}

/// vocab, d_model, L, H, H_kv, ffn, T, seqs per window, windows W, peers P.
pub const PRESETS: [Preset; 4] = [
    preset("tiny", [1024, 128, 2, 4, 2, 384, 128, 8, 3, 3]),
    preset("small", [8192, 512, 8, 8, 4, 1408, 256, 16, 4, 4]),
    preset("150m", [32000, 1024, 12, 16, 16, 2816, 2048, 8, 3, 4]),
    preset("1b", [32000, 2048, 16, 16, 8, 8192, 2048, 8, 3, 4]),
];

pub fn preset_by_name(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
        Error::Config(format!(
            "unknown preset '{name}'; choose one of: {}",
            names.join(", ")
        ))
    })
}

/// Synthetic corpora are indexed, not stored: this many pages exist to draw from.
pub const DEFAULT_SYNTHETIC_PAGES: u64 = 1 << 20;
pub const DEFAULT_SEED: u64 = 42;
pub const DEFAULT_UID: u64 = 0;

/// Everything that determines a reference run's outputs. Its hash names the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadConfig {
    pub preset: String,
    pub model: ModelConfig,
    pub seqs_per_window: i64,
    pub windows: u64,
    pub peers: u64,
    pub uid: u64,
    /// The init seed (θ0).
    pub seed: u64,
    pub hparams: HyperParams,
    pub corpus: CorpusSpec,
}

impl WorkloadConfig {
    pub fn from_preset(name: &str) -> Result<Self> {
        let p = preset_by_name(name)?;
        Ok(Self {
            preset: p.name.to_string(),
            model: p.model,
            seqs_per_window: p.seqs_per_window,
            windows: p.windows,
            peers: p.peers,
            uid: DEFAULT_UID,
            seed: DEFAULT_SEED,
            hparams: HyperParams::default(),
            corpus: CorpusSpec::Synthetic {
                seed: DEFAULT_SEED,
                pages: DEFAULT_SYNTHETIC_PAGES,
            },
        })
    }

    /// The names `set` accepts, for help texts and error messages.
    pub const SETTABLE: &'static [&'static str] = &[
        "vocab",
        "d_model",
        "layers",
        "heads",
        "kv_heads",
        "ffn",
        "seq_len",
        "seqs_per_window",
        "windows",
        "peers",
        "uid",
        "seed",
        "corpus_seed",
        "corpus_pages",
        "lr",
        "weight_decay",
        "momentum_decay",
        "chunk",
        "topk",
        "bins",
        "quant_range_sigmas",
        "eval_lr_factor",
    ];

    /// Overrides one field from `key=value` text.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        fn int(key: &str, value: &str) -> Result<i64> {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| Error::Config(format!("{key}={value}: expected a whole number")))
        }
        fn uint(key: &str, value: &str) -> Result<u64> {
            value.trim().parse::<u64>().map_err(|_| {
                Error::Config(format!(
                    "{key}={value}: expected a non-negative whole number"
                ))
            })
        }
        fn float(key: &str, value: &str) -> Result<f64> {
            value
                .trim()
                .parse::<f64>()
                .map_err(|_| Error::Config(format!("{key}={value}: expected a number")))
        }
        let m = &mut self.model;
        let h = &mut self.hparams;
        match key {
            "vocab" => m.vocab = int(key, value)?,
            "d_model" => m.d_model = int(key, value)?,
            "layers" => m.layers = int(key, value)?,
            "heads" => m.heads = int(key, value)?,
            "kv_heads" => m.kv_heads = int(key, value)?,
            "ffn" => m.ffn = int(key, value)?,
            "seq_len" => m.seq_len = int(key, value)?,
            "seqs_per_window" => self.seqs_per_window = int(key, value)?,
            "windows" => self.windows = uint(key, value)?,
            "peers" => self.peers = uint(key, value)?,
            "uid" => self.uid = uint(key, value)?,
            "seed" => self.seed = uint(key, value)?,
            "corpus_seed" | "corpus_pages" => match &mut self.corpus {
                CorpusSpec::Synthetic { seed, pages } => {
                    if key == "corpus_seed" {
                        *seed = uint(key, value)?
                    } else {
                        *pages = uint(key, value)?
                    }
                }
                CorpusSpec::File { .. } => {
                    return Err(Error::Config(format!(
                        "{key} applies to the synthetic corpus, but a token file is in use"
                    )))
                }
            },
            "lr" => h.lr = float(key, value)?,
            "weight_decay" => h.weight_decay = float(key, value)?,
            "momentum_decay" => h.momentum_decay = float(key, value)?,
            "chunk" => h.chunk = int(key, value)?,
            "topk" => h.topk = int(key, value)?,
            "bins" => h.bins = int(key, value)?,
            "quant_range_sigmas" => h.quant_range_sigmas = float(key, value)?,
            "eval_lr_factor" => h.eval_lr_factor = float(key, value)?,
            _ => {
                return Err(Error::Config(format!(
                    "unknown setting '{key}'; settable: {}",
                    Self::SETTABLE.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// Applies `key=value` overrides in order.
    pub fn apply_overrides<S: AsRef<str>>(&mut self, overrides: &[S]) -> Result<()> {
        for o in overrides {
            let o = o.as_ref();
            let (k, v) = o.split_once('=').ok_or_else(|| {
                Error::Config(format!("override '{o}' is not of the form key=value"))
            })?;
            self.set(k.trim(), v)?;
        }
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let h = &self.hparams;
        let positive = [
            ("vocab", m.vocab),
            ("d_model", m.d_model),
            ("layers", m.layers),
            ("heads", m.heads),
            ("kv_heads", m.kv_heads),
            ("ffn", m.ffn),
            ("seq_len", m.seq_len),
            ("seqs_per_window", self.seqs_per_window),
            ("chunk", h.chunk),
            ("topk", h.topk),
        ];
        for (name, v) in positive {
            if v <= 0 {
                return Err(Error::Config(format!("{name} must be positive, not {v}")));
            }
        }
        if self.windows == 0 {
            return Err(Error::Config("windows must be at least 1".into()));
        }
        if m.d_model % m.heads != 0 {
            return Err(Error::Config(format!(
                "d_model ({}) must be a multiple of heads ({})",
                m.d_model, m.heads
            )));
        }
        if m.heads % m.kv_heads != 0 {
            return Err(Error::Config(format!(
                "heads ({}) must be a multiple of kv_heads ({})",
                m.heads, m.kv_heads
            )));
        }
        if m.head_dim() % 2 != 0 {
            return Err(Error::Config(format!(
                "the head dimension d_model/heads = {} must be even for rotary embeddings",
                m.head_dim()
            )));
        }
        if m.vocab > u32::MAX as i64 {
            return Err(Error::Config(format!("vocab {} is too large", m.vocab)));
        }
        crate::compress::CompressorConfig::from(h).validate()?;
        for (name, v) in [
            ("lr", h.lr),
            ("weight_decay", h.weight_decay),
            ("momentum_decay", h.momentum_decay),
            ("quant_range_sigmas", h.quant_range_sigmas),
            ("eval_lr_factor", h.eval_lr_factor),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::Config(format!(
                    "{name} must be a finite non-negative number, not {v}"
                )));
            }
        }
        if let CorpusSpec::Synthetic { pages, .. } = self.corpus {
            if pages == 0 {
                return Err(Error::Config("corpus_pages must be positive".into()));
            }
        }
        Ok(())
    }

    pub fn tokens_per_window(&self) -> i64 {
        self.seqs_per_window * self.model.seq_len
    }

    /// sha256 of the canonical JSON of this configuration, versioned. Two runs with the same
    /// hash must produce byte-identical outputs on the same device.
    pub fn workload_hash(&self) -> String {
        #[derive(Serialize)]
        struct Canonical<'a> {
            format: &'static str,
            config: &'a WorkloadConfig,
        }
        let json = serde_json::to_vec(&Canonical {
            format: WORKLOAD_FORMAT,
            config: self,
        })
        .expect("a WorkloadConfig always serialises");
        hex::encode(Sha256::digest(json))
    }
}

/// Bumped whenever the meaning of a workload changes (init, corpus, step), so that old hashes
/// stop matching.
pub const WORKLOAD_FORMAT: &str = "crusades-workload/1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_workload_md() {
        let tiny = preset_by_name("tiny").unwrap();
        assert_eq!(tiny.model.vocab, 1024);
        assert_eq!(tiny.model.head_dim(), 32);
        let b = preset_by_name("1b").unwrap();
        assert_eq!(
            (b.model.d_model, b.model.kv_heads, b.model.ffn),
            (2048, 8, 8192)
        );
        for p in PRESETS {
            let mut c = WorkloadConfig::from_preset(p.name).unwrap();
            c.validate().unwrap();
            c.apply_overrides::<&str>(&[]).unwrap();
        }
    }

    #[test]
    fn unknown_preset_names_the_choices() {
        let e = preset_by_name("huge").unwrap_err().to_string();
        assert!(
            e.contains("huge") && e.contains("tiny, small, 150m, 1b"),
            "{e}"
        );
    }

    #[test]
    fn overrides_change_the_hash_and_are_checked() {
        let base = WorkloadConfig::from_preset("tiny").unwrap();
        let mut c = base.clone();
        c.apply_overrides(&["layers=3", "lr = 1e-3"]).unwrap();
        assert_eq!(c.model.layers, 3);
        assert_eq!(c.hparams.lr, 1e-3);
        assert_ne!(c.workload_hash(), base.workload_hash());
        assert_eq!(base.workload_hash(), base.clone().workload_hash());
        assert!(c.clone().apply_overrides(&["heads=3"]).is_err());
        assert!(c.clone().apply_overrides(&["bogus=1"]).is_err());
        assert!(c.clone().apply_overrides(&["layers"]).is_err());
        assert!(c.clone().apply_overrides(&["layers=-1"]).is_err());
        assert!(c.clone().apply_overrides(&["bins=300"]).is_err());
        assert!(c.clone().apply_overrides(&["windows=0"]).is_err());
    }
}
