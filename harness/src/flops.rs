//! The FLOP model: how many floating-point operations one training token of the workload's
//! model requires, term by term, and the MFU arithmetic that divides them by time and peak.
//!
//! # The convention (`palm-torchtitan`)
//!
//! Model FLOPs per token, forward plus backward:
//!
//! ```text
//! 6·(N − N_embedding) + 12·L·H·Q·T
//! ```
//!
//! PaLM, Appendix B (arXiv 2204.02311): "Excluding self-attention, an N-parameter decoder-only
//! model requires 6N matmul FLOPs per token seen (2N for forward and 4N for backward) ... The
//! matmuls in dense self-attention add 6LH(2QT) FLOPs per token". torchtitan writes the same
//! formula as `6 * (nparams - nparams_embedding) + 12 * l * h * q * t` and adds "we follow the
//! convention and do not account for sparsity in causal attention".
//!
//! Why each choice:
//! - The input embedding is a lookup: it does no multiply-adds, so its parameters are taken out
//!   of N. The untied lm_head is a real d×V matmul per token, so its parameters stay in.
//! - Causal attention is counted over the full T² (no ½ for the mask), as PaLM, nanoGPT,
//!   torchtitan and MosaicML do; Megatron and FlashAttention halve it. One convention, written
//!   down, so results on one leaderboard compare (measurement-anchors.md §1.2).
//! - Recomputation (activation checkpointing, FlashAttention's backward) is never counted: MFU
//!   credits the work the model requires, not the work an implementation chose to do. What an
//!   implementation executed is HFU's numerator ([`hfu`]), a diagnostic.
//! - Norm weights are parameters, so `6N` counts `6·d` per norm per token. They are not matmuls;
//!   the term is kept (it is < 0.01% at every preset) so that the sum is exactly PaLM's `6N`.
//!
//! The live Crusades leaderboard counts `6·N_all` per token instead: every parameter, the
//! embedding included, and no attention term ([`FlopModel::crusades_per_token`]). Both are
//! reported so that a result can be put next to the leaderboard's.
//!
//! FLOP values are `f64`: every figure of a realistic model is an integer below 2⁵³, where `f64`
//! is exact, and the MFU arithmetic is floating point anyway.

use serde::{Deserialize, Serialize};

use crusades_reference::config::ModelConfig;

/// The name of the model-FLOPs convention, as it appears in reports.
pub const CONVENTION: &str = "palm-torchtitan";

/// The convention's formula, for reports.
pub const CONVENTION_FORMULA: &str = "6·(N − N_embedding) + 12·L·H·Q·T";

/// The name of the live Crusades leaderboard's convention: `6·N_all` per token.
pub const CRUSADES_CONVENTION: &str = "crusades-6n-all";

/// The Crusades convention's formula, for reports.
pub const CRUSADES_FORMULA: &str = "6·N_all";

/// One line of the FLOP model: a group of parameters (or the attention products) and the model
/// FLOPs per token it accounts for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    /// Stable snake_case identifier, e.g. `attn_k`.
    pub name: String,
    /// The arithmetic, in the symbols of WORKLOAD.md: d, V, L, H, H_kv, Q (head dim), ffn, T.
    pub formula: String,
    /// The parameters this term covers; `None` for the attention products, which have none.
    pub params: Option<u64>,
    /// Model FLOPs per token (forward + backward).
    pub flops_per_token: f64,
}

/// The FLOP model of one decoder (WORKLOAD.md, "Model"): LLaMA-style, grouped-query attention,
/// SwiGLU MLP, RMSNorm, untied lm_head, no biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlopModel {
    pub model: ModelConfig,
    /// N: every parameter, the input embedding and the lm_head included.
    pub params_total: u64,
    /// The input embedding (a lookup table, V·d): the part of N that does no FLOPs.
    pub params_embedding: u64,
}

impl FlopModel {
    /// The FLOP model of `model`. The configuration is expected to be validated
    /// (`WorkloadConfig::validate`): a non-positive dimension counts as 0, and parameter counts
    /// saturate at `u64::MAX` rather than wrap.
    pub fn new(model: &ModelConfig) -> Self {
        let p = Dims::of(model).params();
        Self {
            model: *model,
            params_total: p.total(),
            params_embedding: p.embedding,
        }
    }

    /// Model FLOPs per token, `6·(N − N_embedding) + 12·L·H·Q·T` ([`CONVENTION`]).
    pub fn model_per_token(&self) -> f64 {
        let d = Dims::of(&self.model);
        6.0 * (self.params_total - self.params_embedding) as f64 + d.attention_products()
    }

    /// The live Crusades leaderboard's FLOPs per token, `6·N_all` ([`CRUSADES_CONVENTION`]).
    pub fn crusades_per_token(&self) -> f64 {
        6.0 * self.params_total as f64
    }

    /// Model FLOPs of `tokens` training tokens.
    pub fn model_flops(&self, tokens: u64) -> f64 {
        self.model_per_token() * tokens as f64
    }

    /// The Crusades leaderboard's FLOPs of `tokens` training tokens.
    pub fn crusades_flops(&self, tokens: u64) -> f64 {
        self.crusades_per_token() * tokens as f64
    }

    /// The model FLOPs per token, term by term; they sum exactly to [`Self::model_per_token`].
    /// The embedding is listed with 0 FLOPs so that the table accounts for every parameter.
    pub fn terms(&self) -> Vec<Term> {
        let d = Dims::of(&self.model);
        let p = d.params();
        let six = |params: u64| 6.0 * params as f64;
        let term = |name: &str, formula: &str, params: Option<u64>, flops: f64| Term {
            name: name.into(),
            formula: formula.into(),
            params,
            flops_per_token: flops,
        };
        vec![
            term(
                "embedding",
                "0 (a lookup: no FLOPs)",
                Some(p.embedding),
                0.0,
            ),
            term("attn_q", "6·d·d·L", Some(p.attn_q), six(p.attn_q)),
            term("attn_k", "6·d·(H_kv·Q)·L", Some(p.attn_k), six(p.attn_k)),
            term("attn_v", "6·d·(H_kv·Q)·L", Some(p.attn_v), six(p.attn_v)),
            term("attn_o", "6·d·d·L", Some(p.attn_o), six(p.attn_o)),
            term("mlp_gate", "6·d·ffn·L", Some(p.mlp_gate), six(p.mlp_gate)),
            term("mlp_up", "6·d·ffn·L", Some(p.mlp_up), six(p.mlp_up)),
            term("mlp_down", "6·ffn·d·L", Some(p.mlp_down), six(p.mlp_down)),
            term("norms", "6·d·(2·L+1)", Some(p.norms), six(p.norms)),
            term("lm_head", "6·d·V", Some(p.lm_head), six(p.lm_head)),
            term(
                "attn_scores_values",
                "12·L·H·Q·T (QKᵀ and P·V, full T²)",
                None,
                d.attention_products(),
            ),
        ]
    }
}

/// The model's dimensions as non-negative integers.
struct Dims {
    vocab: u64,
    d: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    ffn: u64,
    seq_len: u64,
}

/// Parameter counts per group, summed over the layers.
struct Params {
    embedding: u64,
    attn_q: u64,
    attn_k: u64,
    attn_v: u64,
    attn_o: u64,
    mlp_gate: u64,
    mlp_up: u64,
    mlp_down: u64,
    /// Two per layer (before attention and before the MLP) and the final one.
    norms: u64,
    lm_head: u64,
}

impl Params {
    fn total(&self) -> u64 {
        [
            self.embedding,
            self.attn_q,
            self.attn_k,
            self.attn_v,
            self.attn_o,
            self.mlp_gate,
            self.mlp_up,
            self.mlp_down,
            self.norms,
            self.lm_head,
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }
}

impl Dims {
    fn of(m: &ModelConfig) -> Self {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Self {
            vocab: u(m.vocab),
            d: u(m.d_model),
            layers: u(m.layers),
            heads: u(m.heads),
            kv_heads: u(m.kv_heads),
            head_dim: if m.heads > 0 { u(m.head_dim()) } else { 0 },
            ffn: u(m.ffn),
            seq_len: u(m.seq_len),
        }
    }

    fn params(&self) -> Params {
        let mul = |factors: &[u64]| factors.iter().fold(1u64, |a, &b| a.saturating_mul(b));
        let (d, l) = (self.d, self.layers);
        let kv = mul(&[self.kv_heads, self.head_dim]);
        Params {
            embedding: mul(&[self.vocab, d]),
            attn_q: mul(&[d, d, l]),
            attn_k: mul(&[d, kv, l]),
            attn_v: mul(&[d, kv, l]),
            attn_o: mul(&[d, d, l]),
            mlp_gate: mul(&[d, self.ffn, l]),
            mlp_up: mul(&[d, self.ffn, l]),
            mlp_down: mul(&[self.ffn, d, l]),
            norms: mul(&[d, l.saturating_mul(2).saturating_add(1)]),
            lm_head: mul(&[d, self.vocab]),
        }
    }

    /// `12·L·H·Q·T`: per token and layer, QKᵀ and P·V are each 2·H·Q·T FLOPs forward, ×3 for
    /// forward plus backward.
    fn attention_products(&self) -> f64 {
        12.0 * self.layers as f64 * self.heads as f64 * self.head_dim as f64 * self.seq_len as f64
    }
}

/// Model FLOPs utilisation: `model_flops / (seconds × peak_flops_per_s)`.
///
/// Returns NaN when `seconds` or `peak_flops_per_s` is not a positive finite number (and
/// whenever an input is NaN): a 0 would read as a real, terrible result, whereas NaN cannot be
/// mistaken for one. Callers treat a non-finite result as an error.
pub fn mfu(model_flops: f64, seconds: f64, peak_flops_per_s: f64) -> f64 {
    utilisation(model_flops, seconds, peak_flops_per_s)
}

/// Hardware FLOPs utilisation: the same arithmetic as [`mfu`], over the FLOPs the
/// implementation executed (recompute included). For honest dense work HFU ≥ MFU.
pub fn hfu(executed_flops: f64, seconds: f64, peak_flops_per_s: f64) -> f64 {
    utilisation(executed_flops, seconds, peak_flops_per_s)
}

/// Achieved FLOP/s, `flops / seconds`; NaN when `seconds` is not a positive finite number.
pub fn flops_per_s(flops: f64, seconds: f64) -> f64 {
    if seconds.is_finite() && seconds > 0.0 {
        flops / seconds
    } else {
        f64::NAN
    }
}

fn utilisation(flops: f64, seconds: f64, peak_flops_per_s: f64) -> f64 {
    if !(peak_flops_per_s.is_finite() && peak_flops_per_s > 0.0) {
        return f64::NAN;
    }
    flops_per_s(flops, seconds) / peak_flops_per_s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crusades_reference::config::WorkloadConfig;

    fn model(preset: &str) -> FlopModel {
        FlopModel::new(&WorkloadConfig::from_preset(preset).unwrap().model)
    }

    fn term(m: &FlopModel, name: &str) -> Term {
        m.terms().into_iter().find(|t| t.name == name).unwrap()
    }

    /// Each term's (params, FLOPs/token), in the order of `terms()`.
    fn table(m: &FlopModel) -> Vec<(&'static str, Option<u64>, f64)> {
        let names = [
            "embedding",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_o",
            "mlp_gate",
            "mlp_up",
            "mlp_down",
            "norms",
            "lm_head",
            "attn_scores_values",
        ];
        let terms = m.terms();
        assert_eq!(terms.len(), names.len());
        names
            .iter()
            .zip(terms)
            .map(|(n, t)| {
                assert_eq!(t.name, *n);
                (*n, t.params, t.flops_per_token)
            })
            .collect()
    }

    #[test]
    fn tiny_matches_the_hand_count() {
        // tiny: vocab 1024, d 128, L 2, H 4, H_kv 2 (Q = 128/4 = 32), ffn 384, T 128.
        let m = model("tiny");
        let embedding = 1024 * 128; // 131_072
        let q = 128 * 128 * 2; // 32_768
        let kv = 128 * (2 * 32) * 2; // 16_384 each for k and v
        let o = q;
        let mlp = 128 * 384 * 2; // 98_304 each for gate, up, down
        let norms = 128 * (2 * 2 + 1); // 640
        let lm_head = 128 * 1024; // 131_072
        let attention = 12.0 * 2.0 * 4.0 * 32.0 * 128.0; // 393_216
        assert_eq!(
            table(&m),
            vec![
                ("embedding", Some(131_072), 0.0),
                ("attn_q", Some(32_768), 196_608.0),
                ("attn_k", Some(16_384), 98_304.0),
                ("attn_v", Some(16_384), 98_304.0),
                ("attn_o", Some(32_768), 196_608.0),
                ("mlp_gate", Some(98_304), 589_824.0),
                ("mlp_up", Some(98_304), 589_824.0),
                ("mlp_down", Some(98_304), 589_824.0),
                ("norms", Some(640), 3_840.0),
                ("lm_head", Some(131_072), 786_432.0),
                ("attn_scores_values", None, 393_216.0),
            ]
        );
        let n = embedding + q + 2 * kv + o + 3 * mlp + norms + lm_head;
        assert_eq!(n, 656_000);
        assert_eq!(m.params_total, 656_000);
        assert_eq!(m.params_embedding, 131_072);
        // 6·(656_000 − 131_072) + 393_216 = 3_149_568 + 393_216
        assert_eq!(
            m.model_per_token(),
            6.0 * (n - embedding) as f64 + attention
        );
        assert_eq!(m.model_per_token(), 3_542_784.0);
        assert_eq!(m.crusades_per_token(), 3_936_000.0); // 6 · 656_000
    }

    #[test]
    fn one_b_matches_the_hand_count() {
        // 1b: vocab 32000, d 2048, L 16, H 16, H_kv 8 (Q = 2048/16 = 128), ffn 8192, T 2048.
        let m = model("1b");
        assert_eq!(
            table(&m),
            vec![
                ("embedding", Some(65_536_000), 0.0),        // 32000·2048
                ("attn_q", Some(67_108_864), 402_653_184.0), // 2048·2048·16
                ("attn_k", Some(33_554_432), 201_326_592.0), // 2048·(8·128)·16
                ("attn_v", Some(33_554_432), 201_326_592.0),
                ("attn_o", Some(67_108_864), 402_653_184.0),
                ("mlp_gate", Some(268_435_456), 1_610_612_736.0), // 2048·8192·16
                ("mlp_up", Some(268_435_456), 1_610_612_736.0),
                ("mlp_down", Some(268_435_456), 1_610_612_736.0),
                ("norms", Some(67_584), 405_504.0), // 2048·33
                ("lm_head", Some(65_536_000), 393_216_000.0),
                ("attn_scores_values", None, 805_306_368.0), // 12·16·16·128·2048
            ]
        );
        // N = 2·65_536_000 + 2·67_108_864 + 2·33_554_432 + 3·268_435_456 + 67_584
        assert_eq!(m.params_total, 1_137_772_544);
        assert_eq!(m.params_embedding, 65_536_000);
        // 6·1_072_236_544 + 805_306_368 = 6_433_419_264 + 805_306_368
        assert_eq!(m.model_per_token(), 7_238_725_632.0);
        assert_eq!(m.crusades_per_token(), 6_826_635_264.0); // 6 · 1_137_772_544
        assert_eq!(term(&m, "attn_k").formula, "6·d·(H_kv·Q)·L");
    }

    #[test]
    fn terms_sum_exactly_to_the_total_and_cover_every_parameter() {
        for preset in ["tiny", "small", "150m", "1b"] {
            let m = model(preset);
            let terms = m.terms();
            let flops: f64 = terms.iter().map(|t| t.flops_per_token).sum();
            assert_eq!(flops, m.model_per_token(), "{preset}");
            let params: u64 = terms.iter().filter_map(|t| t.params).sum();
            assert_eq!(params, m.params_total, "{preset}");
            let mut names: Vec<_> = terms.iter().map(|t| t.name.as_str()).collect();
            names.dedup();
            assert_eq!(names.len(), terms.len(), "names are unique");
            assert!(names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        }
    }

    #[test]
    fn workload_totals_multiply_per_token_figures() {
        let m = model("tiny");
        // 8 sequences × 128 tokens × 3 windows
        assert_eq!(m.model_flops(3072), 3_542_784.0 * 3072.0);
        assert_eq!(m.crusades_flops(3072), 3_936_000.0 * 3072.0);
    }

    #[test]
    fn mfu_arithmetic_is_exact() {
        // 2⁴⁰ FLOPs in 0.5 s on a 2⁴² FLOP/s peak: 2⁴¹ FLOP/s achieved, MFU ½.
        let flops = 2f64.powi(40);
        assert_eq!(flops_per_s(flops, 0.5), 2f64.powi(41));
        assert_eq!(mfu(flops, 0.5, 2f64.powi(42)), 0.5);
        // 3·2³⁸ FLOPs in 2 s on 2⁴⁰ FLOP/s: 3/8.
        assert_eq!(mfu(3.0 * 2f64.powi(38), 2.0, 2f64.powi(40)), 0.375);
        assert_eq!(hfu(2f64.powi(40), 0.25, 2f64.powi(43)), 0.5);
    }

    #[test]
    fn degenerate_timings_give_nan_not_a_division_by_zero() {
        for (seconds, peak) in [
            (0.0, 1e12),
            (-1.0, 1e12),
            (f64::NAN, 1e12),
            (f64::INFINITY, 1e12),
            (1.0, 0.0),
            (1.0, -5.0),
            (1.0, f64::NAN),
            (1.0, f64::INFINITY),
        ] {
            assert!(mfu(1e12, seconds, peak).is_nan(), "{seconds} {peak}");
            assert!(hfu(1e12, seconds, peak).is_nan(), "{seconds} {peak}");
        }
        assert!(flops_per_s(1.0, 0.0).is_nan());
    }

    #[test]
    fn serialises_with_snake_case_fields() {
        let m = model("tiny");
        let j = serde_json::to_value(m).unwrap();
        assert_eq!(j["params_total"], 656_000);
        assert_eq!(j["params_embedding"], 131_072);
        let t = serde_json::to_value(&m.terms()[10]).unwrap();
        assert_eq!(t["name"], "attn_scores_values");
        assert!(t["params"].is_null());
        assert_eq!(t["flops_per_token"], 393_216.0);
        let back: FlopModel = serde_json::from_value(j).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn nonsense_dimensions_do_not_panic() {
        let mut c = WorkloadConfig::from_preset("tiny").unwrap().model;
        c.heads = 0;
        c.d_model = -5;
        let m = FlopModel::new(&c);
        assert!(m.model_per_token().is_finite());
        c.d_model = i64::MAX;
        c.heads = 1;
        let m = FlopModel::new(&c);
        assert_eq!(m.params_total, u64::MAX);
    }
}
