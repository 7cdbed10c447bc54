//! The verification gates (../shared/DESIGN.md, "Verification gates"): thresholds, and the
//! verdict they give over a bench's timed runs. Each gate reports the worst value over the
//! runs (and windows, and tensors), its threshold and whether it held; the first failed gate
//! in [`GateCode::ALL`] order (the order data flows through a window: loss, then upload, then
//! weights) gives the record's `error_code`.
//!
//! The thresholds are calibrated from measured honest variance (`Thresholds::default` says
//! what was measured, and the README's "Verification gates" table repeats it).

use std::collections::BTreeMap;

use crusades_results::record::{Comparison, Gate, Run};
use crusades_results::GateCode;

use crate::verify::{Measurements, Reference};

/// Every tolerance the gates apply.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds {
    /// Largest |loss − loss_ref| of any window.
    pub loss_abs: f64,
    /// Smallest mean per-chunk top-k index overlap with the reference's upload, of any window.
    pub upload_overlap: f64,
    /// Largest ‖D − D_ref‖ / ‖D_ref‖ of any window's decoded upload (DCT space).
    pub upload_value_error: f64,
    /// Smallest (loss drop from applying the upload) / (the reference upload's loss drop), of
    /// any window (Templar's validator check).
    pub templar_ratio: f64,
    /// Largest ‖θ − θ_ref‖ / ‖θ_ref − θ0‖ over all parameters.
    pub weight_error: f64,
    /// Largest ‖θ − θ_ref‖ / ‖θ_ref − θ0‖ of any one tensor.
    pub weight_error_tensor: f64,
    /// Smallest (fraction of parameters changed from θ0) / (the reference's fraction), over all
    /// of θ and for each tensor.
    pub params_changed_ratio: f64,
    /// Smallest cosine, over tensors, between the run's update θ − θ0 and the reference's.
    pub update_cosine: f64,
    /// Smallest HFU / MFU: the host must have executed at least the model's FLOPs.
    pub hfu_over_mfu: f64,
    /// Largest plausible MFU.
    pub mfu_cap: f64,
    /// Largest (model FLOP/s claimed) / (the most the GPU's pipes could have done, from NVML
    /// GPM tensor activity). GPUs without GPM are not judged.
    pub tensor_activity: f64,
    /// Largest |wall − CUDA-event time| / wall of the timed region. CPU runs are not judged.
    pub timer_divergence: f64,
}

impl Default for Thresholds {
    /// Calibrated from measured honest variance on CPU (README, "Verification gates"; the
    /// commands are there). The f32 baseline reproduces the reference bit for bit: every error
    /// 0, overlap 1, Templar ratio 1. The bf16 `submissions/fast` is the largest honest
    /// deviation we have; its worst value over tiny and small (small, W = 4, is the worse) is
    /// quoted per field. Each threshold sits at about 3× that deviation (for the overlap and
    /// the Templar ratio: 3× the shortfall from 1), rounded to a plain number, which every
    /// corrupted variant in submissions/exploits misses by far. The drift grows with the
    /// number of windows: the presets' W is what was calibrated.
    fn default() -> Self {
        Self {
            // bf16: 7.0e-4 (small). A skipped window is off by 0.04.
            loss_abs: 0.01,
            // bf16: 0.936 (small, window 3; lowest tensor 0.90). No error feedback or a
            // top-k by signed value: 0.1–0.5.
            upload_overlap: 0.8,
            // bf16: 0.305 (small, window 3; worst tensor 0.42). A zeroed upload: 1.0.
            upload_value_error: 0.75,
            // bf16: 0.9997 (small); 0.995 (tiny).
            templar_ratio: 0.8,
            // bf16: 0.369 (small).
            weight_error: 1.0,
            // bf16: 0.469 (small, the embedding).
            weight_error_tensor: 1.5,
            // Crusades' min_params_changed_ratio. Honest runs change every parameter (weight
            // decay alone moves each one).
            params_changed_ratio: 0.75,
            // bf16: 0.890 (small, the embedding); 0.956 (tiny). 3× the shortfall from 1 is
            // 0.67; 0.6 leaves a little more for longer runs. A tensor that decays but is never
            // updated: 0.013 (tiny).
            update_cosine: 0.6,
            // Executed FLOPs can exceed model FLOPs (recompute, compression) but never fall
            // short of them. bf16: 1.025; the baseline: 1.036 (small).
            hfu_over_mfu: 1.0,
            // Crusades' max_plausible_mfu (85 %): above the best measured GEMM ceiling of any
            // GPU in the peak table (A100 SXM, 86.9 % of spec, is the highest), so an honest
            // run stays below it.
            mfu_cap: 0.85,
            // The bound is already generous (every pipe at its peak rate whenever NVML saw it
            // active, plus every non-tensor pipe at full rate all the time), so any excess is
            // impossible work. Not yet calibrated on hardware: the H100 run that will measure
            // a known bf16 GEMM's activity is in ci/GPU.md.
            tensor_activity: 1.0,
            // Crusades' timer_divergence_threshold. Both clocks bracket the same synchronised
            // region; they differ by a synchronise and an event record (tens of µs).
            timer_divergence: 0.005,
        }
    }
}

impl Thresholds {
    pub fn as_map(&self) -> BTreeMap<String, f64> {
        let v = serde_json::to_value(self).unwrap_or_default();
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Applies `key=value` (the field names above), for `--gate`.
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let (key, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?} is not KEY=VALUE"))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("{key}: {value:?} is not a number"))?;
        let mut map = serde_json::to_value(*self).map_err(|e| e.to_string())?;
        let slot = map.get_mut(key.trim()).ok_or_else(|| {
            format!(
                "no gate threshold named {key:?}; the keys are {}",
                self.as_map().keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        *slot = value.into();
        *self = serde_json::from_value(map).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The worst value seen so far and where. `worse(a, b)` says whether a is worse than b; NaN
/// is worse than anything.
struct Worst {
    value: Option<f64>,
    detail: String,
    larger_is_worse: bool,
}

impl Worst {
    fn new(larger_is_worse: bool) -> Self {
        Self {
            value: None,
            detail: String::new(),
            larger_is_worse,
        }
    }

    fn see(&mut self, value: f64, detail: impl FnOnce() -> String) {
        let worse = match self.value {
            None => true,
            Some(v) if v.is_nan() => false,
            Some(_) if value.is_nan() => true,
            Some(v) => {
                if self.larger_is_worse {
                    value > v
                } else {
                    value < v
                }
            }
        };
        if worse {
            self.value = Some(value);
            self.detail = detail();
        }
    }

    fn gate(self, code: GateCode, measure: &str, comparison: Comparison, threshold: f64) -> Gate {
        // Nothing worse than the threshold was seen (or nothing at all): report the threshold's
        // own value for an equality, and the best possible value otherwise.
        let value = self.value.unwrap_or(match comparison {
            Comparison::Equal => threshold,
            Comparison::AtLeast => f64::INFINITY,
            Comparison::AtMost => 0.0,
        });
        Gate {
            code,
            measure: measure.to_string(),
            value: value.is_finite().then_some(value),
            comparison,
            threshold,
            passed: comparison.holds(value, threshold),
            detail: if self.detail.is_empty() && !value.is_finite() {
                format!("value {value}")
            } else {
                self.detail
            },
        }
    }
}

/// Non-tensor FLOPs per clock per SM that the tensor-activity bound allows besides the tensor
/// pipes: 128 FP32 lanes × 2 (FMA) × 2 (packed half precision), more than any architecture in
/// the peak table has.
pub const NON_TENSOR_FLOPS_PER_CLOCK_PER_SM: f64 = 512.0;

/// Every gate over the timed runs (`measured[i]` and `runs[i]` are run i + 1). `sm_count` is
/// the GPU's, for the tensor-activity bound (None on CPU).
pub fn evaluate(
    measured: &[Measurements],
    runs: &[Run],
    reference: &Reference,
    tokens_per_window: u64,
    sm_count: Option<u64>,
    t: &Thresholds,
) -> Vec<Gate> {
    let runs_of = || measured.iter().enumerate().map(|(i, m)| (i + 1, m));
    let mut gates = Vec::with_capacity(GateCode::ALL.len());

    let mut nonfinite = 0usize;
    let mut first = String::new();
    for (r, m) in runs_of() {
        if first.is_empty() {
            if let Some(w) = m.nonfinite.first() {
                first = format!("run {r}: {w}");
            }
        }
        nonfinite += m.nonfinite.len();
    }
    gates.push(Gate {
        code: GateCode::NanInf,
        measure: "non-finite losses, uploads and final weights".into(),
        value: Some(nonfinite as f64),
        comparison: Comparison::AtMost,
        threshold: 0.0,
        passed: nonfinite == 0,
        detail: first,
    });

    let mut tokens = Worst::new(false);
    let expected = tokens_per_window as f64;
    for (r, m) in runs_of() {
        for (w, &n) in m.window_tokens.iter().enumerate() {
            // The distance from the expected count decides which window is the worst.
            let off = (n as f64 - expected).abs();
            if off > 0.0 && tokens.value.is_none_or(|v| (v - expected).abs() < off) {
                tokens.value = Some(n as f64);
                tokens.detail = format!(
                    "run {r}, window {w}: the loss covered {n} label tokens; the window has {tokens_per_window}"
                );
            }
        }
    }
    gates.push(tokens.gate(
        GateCode::TokenCount,
        "label tokens whose loss was differentiated, per window",
        Comparison::Equal,
        expected,
    ));

    let mut loss = Worst::new(true);
    for (r, m) in runs_of() {
        for (w, (l, l_ref)) in m.losses.iter().zip(&reference.losses).enumerate() {
            loss.see((l - l_ref).abs(), || {
                format!("run {r}, window {w}: loss {l:.6}, reference {l_ref:.6}")
            });
        }
    }
    gates.push(loss.gate(
        GateCode::LossMismatch,
        "|loss − loss_ref| per window",
        Comparison::AtMost,
        t.loss_abs,
    ));

    let mut overlap = Worst::new(false);
    for (r, m) in runs_of() {
        for (w, (mean, tensor, tensor_mean)) in m.overlap.iter().enumerate() {
            overlap.see(*mean, || {
                format!("run {r}, window {w} (lowest tensor: {tensor}, {tensor_mean:.3})")
            });
        }
    }
    gates.push(overlap.gate(
        GateCode::UploadIndexOverlap,
        "mean per-chunk top-k index overlap with the reference's upload",
        Comparison::AtLeast,
        t.upload_overlap,
    ));

    let mut value = Worst::new(true);
    for (r, m) in runs_of() {
        for (w, (err, tensor, tensor_err)) in m.value_error.iter().enumerate() {
            value.see(*err, || {
                format!("run {r}, window {w} (worst tensor: {tensor}, {tensor_err:.3})")
            });
        }
    }
    gates.push(value.gate(
        GateCode::UploadValueError,
        "‖D − D_ref‖ / ‖D_ref‖ of the decoded upload",
        Comparison::AtMost,
        t.upload_value_error,
    ));

    let mut templar = Worst::new(false);
    let mut unjudged = Vec::new();
    for (r, m) in runs_of() {
        for (w, (after, (before, ref_after))) in
            m.templar_after.iter().zip(&reference.templar).enumerate()
        {
            let ref_drop = before - ref_after;
            if ref_drop <= 0.0 {
                // The reference's own upload did not lower the loss: nothing to compare with.
                unjudged.push(w);
                continue;
            }
            let ratio = (before - after) / ref_drop;
            templar.see(ratio, || {
                format!(
                    "run {r}, window {w}: the upload lowers the loss by {:.3e}, the reference's by {ref_drop:.3e}",
                    before - after
                )
            });
        }
    }
    let mut g = templar.gate(
        GateCode::TemplarCheck,
        "loss drop from applying the upload alone / the reference upload's",
        Comparison::AtLeast,
        t.templar_ratio,
    );
    if !unjudged.is_empty() {
        unjudged.dedup();
        g.detail = format!(
            "{}{}windows {unjudged:?} not judged: the reference's upload did not lower the loss",
            g.detail,
            if g.detail.is_empty() { "" } else { "; " }
        );
    }
    gates.push(g);

    let mut weights = Worst::new(true);
    let mut tensor = Worst::new(true);
    for (r, m) in runs_of() {
        weights.see(m.weight_error, || format!("run {r}"));
        let (e, name) = &m.weight_error_tensor;
        tensor.see(*e, || format!("run {r}: {name}"));
    }
    gates.push(weights.gate(
        GateCode::WeightError,
        "‖θ − θ_ref‖ / ‖θ_ref − θ0‖ over all parameters",
        Comparison::AtMost,
        t.weight_error,
    ));
    gates.push(tensor.gate(
        GateCode::WeightErrorTensor,
        "‖θ − θ_ref‖ / ‖θ_ref − θ0‖ of the worst tensor",
        Comparison::AtMost,
        t.weight_error_tensor,
    ));

    let mut changed = Worst::new(false);
    for (r, m) in runs_of() {
        let ratio = if reference.changed_fraction > 0.0 {
            m.changed_fraction / reference.changed_fraction
        } else {
            1.0
        };
        changed.see(ratio, || {
            format!(
                "run {r}: {:.2} % of parameters changed, the reference changed {:.2} %",
                100.0 * m.changed_fraction,
                100.0 * reference.changed_fraction
            )
        });
        // Per tensor too: freezing one small tensor barely moves the fraction over all of θ.
        let (tensor_ratio, tensor) = &m.changed_tensor;
        if tensor_ratio.is_finite() {
            changed.see(*tensor_ratio, || {
                format!(
                    "run {r}: tensor {tensor} changed {:.2} % as many elements as the reference's",
                    100.0 * tensor_ratio
                )
            });
        }
    }
    gates.push(changed.gate(
        GateCode::ParamsChanged,
        "fraction of parameters changed / the reference's",
        Comparison::AtLeast,
        t.params_changed_ratio,
    ));

    let mut direction = Worst::new(false);
    for (r, m) in runs_of() {
        let (cosine, tensor) = &m.update_cosine;
        // Infinite: no tensor was judged (the reference moved none).
        if !cosine.is_infinite() {
            direction.see(*cosine, || format!("run {r}: {tensor}"));
        }
    }
    gates.push(direction.gate(
        GateCode::UpdateDirection,
        "cos(θ − θ0, θ_ref − θ0) of the worst tensor",
        Comparison::AtLeast,
        t.update_cosine,
    ));

    let mut hfu = Worst::new(false);
    let mut mfu = Worst::new(true);
    for (i, run) in runs.iter().enumerate() {
        let ratio = run.hardware_flops / run.model_flops;
        hfu.see(ratio, || {
            format!(
                "run {}: HFU {:.2} %, MFU {:.2} %",
                i + 1,
                100.0 * run.hfu,
                100.0 * run.mfu
            )
        });
        mfu.see(run.mfu, || format!("run {}", i + 1));
    }
    gates.push(hfu.gate(
        GateCode::HfuBelowMfu,
        "HFU / MFU (executed FLOPs / model FLOPs)",
        Comparison::AtLeast,
        t.hfu_over_mfu,
    ));
    gates.push(mfu.gate(
        GateCode::MfuImplausible,
        "MFU",
        Comparison::AtMost,
        t.mfu_cap,
    ));
    gates.push(tensor_activity_gate(runs, sm_count, t.tensor_activity));
    gates.push(timer_gate(runs, t.timer_divergence));
    gates
}

/// Claimed model FLOP/s against the most the GPU could have executed: its tensor pipes at full
/// rate for the share of time GPM saw them active, plus every other pipe at full rate always.
fn tensor_activity_gate(runs: &[Run], sm_count: Option<u64>, threshold: f64) -> Gate {
    let mut worst = Worst::new(true);
    let mut judged = 0;
    for (i, run) in runs.iter().enumerate() {
        let Some(t) = run.telemetry.measured() else {
            continue;
        };
        let (Some(tensor), Some(clock), Some(sms)) =
            (t.tensor_bound_flops_per_s, t.sm_clock_mean_mhz, sm_count)
        else {
            continue;
        };
        let other = sms as f64 * clock * 1e6 * NON_TENSOR_FLOPS_PER_CLOCK_PER_SM;
        let claimed = run.model_flops / run.wall_s;
        judged += 1;
        worst.see(claimed / (tensor + other), || {
            format!(
                "run {}: {:.1} TFLOP/s claimed; tensor pipes active {:.1} % at {clock:.0} MHz allow {:.1}, other pipes {:.1}",
                i + 1,
                claimed / 1e12,
                100.0 * t.tensor_active.unwrap_or(0.0),
                tensor / 1e12,
                other / 1e12
            )
        });
    }
    let mut gate = worst.gate(
        GateCode::TensorActivity,
        "model FLOP/s / what the GPU's pipe activity allows (NVML GPM)",
        Comparison::AtMost,
        threshold,
    );
    if judged == 0 {
        gate.detail = "not judged: no tensor-pipe activity was measured (a CPU run, or a GPU \
                       without NVML GPM)"
            .into();
    }
    gate
}

/// The host's wall clock against the CUDA events around the same region.
fn timer_gate(runs: &[Run], threshold: f64) -> Gate {
    let mut worst = Worst::new(true);
    let mut judged = 0;
    for (i, run) in runs.iter().enumerate() {
        let Some(device_s) = run.device_s else {
            continue;
        };
        judged += 1;
        let divergence = (run.wall_s - device_s).abs() / run.wall_s;
        worst.see(divergence, || {
            format!(
                "run {}: wall {:.6} s, CUDA events {device_s:.6} s",
                i + 1,
                run.wall_s
            )
        });
    }
    let mut gate = worst.gate(
        GateCode::TimerDivergence,
        "|wall − CUDA-event time| / wall of the timed region",
        Comparison::AtMost,
        threshold,
    );
    if judged == 0 {
        gate.detail = "not judged: a CPU run has no device clock".into();
    }
    gate
}

/// The first failed gate, in precedence order.
pub fn first_failure(gates: &[Gate]) -> Option<&Gate> {
    GateCode::ALL
        .iter()
        .find_map(|code| gates.iter().find(|g| g.code == *code && !g.passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        Reference {
            losses: vec![7.0, 6.9],
            uploads: Vec::new(),
            weights: Vec::new(),
            thetas: Vec::new(),
            templar: vec![(7.0, 6.9), (6.9, 6.85)],
            changed_fraction: 1.0,
            changed_per_tensor: vec![1.0],
        }
    }

    fn honest() -> Measurements {
        Measurements {
            nonfinite: Vec::new(),
            window_tokens: vec![1024, 1024],
            losses: vec![7.0, 6.9],
            overlap: vec![(1.0, "a".into(), 1.0); 2],
            value_error: vec![(0.0, "a".into(), 0.0); 2],
            templar_after: vec![6.9, 6.85],
            weight_error: 0.0,
            weight_error_tensor: (0.0, "a".into()),
            changed_fraction: 1.0,
            changed_tensor: (1.0, "a".into()),
            update_cosine: (1.0, "a".into()),
        }
    }

    fn run(mfu: f64, hfu: f64) -> Run {
        serde_json::from_value(serde_json::json!({
            "wall_s": 1.0, "worker_wall_s": 1.5, "setup_s": 0.1, "compile_s": 0.1,
            "instantiate_s": 0.0, "tokens": 2048, "tokens_per_s": 2048.0,
            "model_flops": mfu * 1e12, "hardware_flops": hfu * 1e12,
            "mfu": mfu, "mfu_crusades": mfu, "hfu": hfu, "step_latency": null,
            "phases": {"train_s": 1.0, "compress_s": 0.0, "aggregate_s": 0.0, "other_s": 0.0},
            "losses": [7.0, 6.9], "window_tokens": [1024, 1024], "op_calls": 1,
            "peak_tensor_bytes": 0, "peak_handles": 0
        }))
        .unwrap()
    }

    fn verdict(m: Measurements, r: Run) -> Option<GateCode> {
        let gates = evaluate(
            &[m],
            &[r],
            &reference(),
            1024,
            Some(132),
            &Thresholds::default(),
        );
        assert_eq!(gates.len(), GateCode::ALL.len());
        first_failure(&gates).map(|g| g.code)
    }

    #[test]
    fn an_honest_run_passes_every_gate() {
        assert_eq!(verdict(honest(), run(0.3, 0.4)), None);
    }

    #[test]
    fn each_corruption_fails_its_own_gate() {
        type Corruption = Box<dyn Fn(&mut Measurements)>;
        let cases: Vec<(GateCode, Corruption, (f64, f64))> = vec![
            (
                GateCode::NanInf,
                Box::new(|m| m.nonfinite.push("x".into())),
                (0.3, 0.4),
            ),
            (
                GateCode::TokenCount,
                Box::new(|m| m.window_tokens[1] = 512),
                (0.3, 0.4),
            ),
            (
                GateCode::LossMismatch,
                Box::new(|m| m.losses[0] = 7.5),
                (0.3, 0.4),
            ),
            (
                GateCode::LossMismatch,
                Box::new(|m| m.losses[1] = f64::NAN),
                (0.3, 0.4),
            ),
            (
                GateCode::UploadIndexOverlap,
                Box::new(|m| m.overlap[1].0 = 0.1),
                (0.3, 0.4),
            ),
            (
                GateCode::UploadValueError,
                Box::new(|m| m.value_error[0].0 = 1.0),
                (0.3, 0.4),
            ),
            (
                GateCode::TemplarCheck,
                Box::new(|m| m.templar_after[0] = 7.0),
                (0.3, 0.4),
            ),
            (
                GateCode::WeightError,
                Box::new(|m| m.weight_error = 3.0),
                (0.3, 0.4),
            ),
            (
                GateCode::WeightErrorTensor,
                Box::new(|m| m.weight_error_tensor.0 = 3.0),
                (0.3, 0.4),
            ),
            (
                GateCode::ParamsChanged,
                Box::new(|m| m.changed_fraction = 0.5),
                (0.3, 0.4),
            ),
            (
                GateCode::ParamsChanged,
                Box::new(|m| m.changed_tensor = (0.0, "layers.0.wq".into())),
                (0.3, 0.4),
            ),
            (
                GateCode::UpdateDirection,
                Box::new(|m| m.update_cosine = (0.01, "layers.0.wq".into())),
                (0.3, 0.4),
            ),
            (GateCode::HfuBelowMfu, Box::new(|_| {}), (0.3, 0.2)),
            (GateCode::MfuImplausible, Box::new(|_| {}), (0.9, 1.0)),
        ];
        for (code, corrupt, (mfu, hfu)) in cases {
            let mut m = honest();
            corrupt(&mut m);
            assert_eq!(verdict(m, run(mfu, hfu)), Some(code), "{code}");
        }
    }

    #[test]
    fn the_worst_run_decides_and_is_named() {
        let mut bad = honest();
        bad.losses[1] = 6.8;
        let gates = evaluate(
            &[honest(), bad],
            &[run(0.3, 0.4), run(0.3, 0.4)],
            &reference(),
            1024,
            None,
            &Thresholds::default(),
        );
        let loss = gates
            .iter()
            .find(|g| g.code == GateCode::LossMismatch)
            .unwrap();
        assert!((loss.value.unwrap() - 0.1).abs() < 1e-9);
        assert!(
            loss.detail.starts_with("run 2, window 1"),
            "{}",
            loss.detail
        );
        assert!(!loss.passed);
    }

    #[test]
    fn thresholds_are_settable_by_name_and_refuse_unknown_keys() {
        let mut t = Thresholds::default();
        t.set("loss_abs=0.25").unwrap();
        assert_eq!(t.loss_abs, 0.25);
        assert!(t.set("loss=1").unwrap_err().contains("loss_abs"));
        assert!(t.set("loss_abs=x").is_err());
        assert_eq!(t.as_map().len(), 12);
        t.set("timer_divergence=0.01").unwrap();
        assert_eq!(t.timer_divergence, 0.01);
    }

    /// A 1 s H100 run: `model_flops` claimed, GPM saw the tensor pipes `active` of the time at
    /// 1980 MHz, and the CUDA events measured `device_s`.
    fn gpu_run(model_flops: f64, active: f64, device_s: f64) -> Run {
        let mut r = run(model_flops / 989e12, 1.0);
        r.model_flops = model_flops;
        r.hardware_flops = model_flops * 1.05;
        r.device_s = Some(device_s);
        let per_clock = 132.0 * 4096.0;
        r.telemetry = serde_json::from_value(serde_json::json!({
            "status": "measured", "gpu_uuid": "GPU-0", "samples": 10, "interval_s": 0.1,
            "sm_clock_mean_mhz": 1980.0, "sm_clock_min_mhz": 1980.0, "mem_clock_mean_mhz": 2619.0,
            "energy_j": 650.0, "energy_source": "energy-counter", "j_per_token": 0.3,
            "power_mean_w": 650.0, "power_max_w": 700.0, "gpu_util_mean": 1.0,
            "mem_util_mean": 0.5, "temperature_max_c": 60.0, "clock_event_reasons": 0,
            "clock_event_reason_names": [], "throttled_share": 0.0, "idle_share": 0.0,
            "violation_s": {}, "tensor_active": active,
            "tensor_bound_flops_per_s": active * 1980e6 * per_clock, "warnings": []
        }))
        .unwrap();
        r
    }

    fn gate_of(runs: &[Run], code: GateCode) -> Gate {
        let m = vec![honest(); runs.len()];
        let gates = evaluate(
            &m,
            runs,
            &reference(),
            1024,
            Some(132),
            &Thresholds::default(),
        );
        gates.into_iter().find(|g| g.code == code).unwrap()
    }

    #[test]
    fn claimed_flops_beyond_the_tensor_pipes_activity_are_rejected() {
        // 400 TFLOP/s with the pipes busy half the time: within 0.5 × 1070 + 134 TFLOP/s.
        let honest_run = gpu_run(400e12, 0.5, 0.999);
        let g = gate_of(std::slice::from_ref(&honest_run), GateCode::TensorActivity);
        assert!(g.passed, "{g:?}");
        assert!(g.value.unwrap() > 0.5 && g.value.unwrap() < 0.65, "{g:?}");
        // The same claim with the pipes nearly idle cannot have happened.
        let g = gate_of(
            &[honest_run, gpu_run(400e12, 0.05, 0.999)],
            GateCode::TensorActivity,
        );
        assert!(!g.passed, "{g:?}");
        assert!(
            g.detail.starts_with("run 2: 400.0 TFLOP/s claimed"),
            "{}",
            g.detail
        );
        assert_eq!(
            verdict(honest(), gpu_run(400e12, 0.05, 0.999)),
            Some(GateCode::TensorActivity)
        );
    }

    #[test]
    fn a_run_without_gpm_or_on_cpu_is_not_judged_by_the_device_gates() {
        for code in [GateCode::TensorActivity, GateCode::TimerDivergence] {
            let g = gate_of(&[run(0.3, 0.4)], code);
            assert!(g.passed && g.detail.starts_with("not judged"), "{g:?}");
        }
    }

    #[test]
    fn the_event_clock_must_agree_with_the_wall_clock() {
        let g = gate_of(&[gpu_run(300e12, 0.5, 0.9999)], GateCode::TimerDivergence);
        assert!(g.passed && (g.value.unwrap() - 1e-4).abs() < 1e-9, "{g:?}");
        let g = gate_of(&[gpu_run(300e12, 0.5, 0.9)], GateCode::TimerDivergence);
        assert!(!g.passed, "{g:?}");
        assert!(g.detail.contains("CUDA events 0.900000 s"), "{}", g.detail);
    }
}
