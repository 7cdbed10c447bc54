//! The result record: everything one evaluation measured and decided, as one versioned JSON
//! document. `crusades bench --json` writes it; the store, the leaderboard, `reproduce` and the
//! chain read it. Its JSON Schema (`results/schema/record-v1.schema.json`) is generated from
//! these types and committed, so a change to the wire form shows up as a diff to review.
//!
//! Stability rules: fields are only added (with `#[serde(default)]` so older records still
//! parse), never renamed or re-typed within one [`SCHEMA`] version. Seconds are `_s`, rates
//! are per second, utilisations are fractions (0.42, not 42 %).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The record format's identifier; bumped on any incompatible change.
pub const SCHEMA: &str = "crusades.record/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// When the evaluation finished, RFC 3339 in UTC.
    pub created_at: String,
    pub harness: Harness,
    pub submission: Submission,
    pub workload: Workload,
    pub hardware: Hardware,
    pub peak: Peak,
    pub flops: FlopsSummary,
    /// The warm-up run: the same call as a timed run, not scored. Absent if it failed.
    pub warmup: Option<Run>,
    /// The timed runs, in order. Fewer than asked for if one failed.
    pub runs: Vec<Run>,
    /// The medians over `runs`. Absent when no timed run completed.
    pub score: Option<Score>,
    /// Every gate that was evaluated, in precedence order; the first failed one gives
    /// `error_code`.
    pub gates: Vec<Gate>,
    pub verdict: Verdict,
    /// Why the verdict is `rejected`: a gate's code, or the failure code of a run that did not
    /// complete. Null when accepted.
    pub error_code: Option<String>,
    /// The run failure behind `error_code`, when a run did not complete.
    pub failure: Option<RunFailure>,
    /// The per-op profile of the median timed run.
    pub profile: Option<Profile>,
    pub evaluation: Evaluation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Harness {
    /// The crusades package version.
    pub version: String,
    /// The git commit the binary was built from (with `-dirty` if the tree had changes);
    /// null when built outside a git checkout.
    pub git_revision: Option<String>,
    /// The WIT contract version (`crusades:submission@…`).
    pub contract_version: String,
    /// The libtorch the ops ran on.
    pub libtorch: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// sha256 of the component's bytes, lowercase hex: the submission's identity.
    pub sha256: String,
    pub bytes: u64,
    /// Where the component was read from (informational).
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub preset: String,
    /// The workload hash (θ0, pages, peers are a function of the config).
    pub hash: String,
    /// The fully resolved configuration (`crusades_reference::config::WorkloadConfig`).
    pub config: serde_json::Value,
    pub seed: u64,
    pub uid: u64,
    pub windows: u64,
    pub peers: u64,
    /// seqs per window × T.
    pub tokens_per_window: u64,
    /// Over all windows.
    pub tokens: u64,
    /// The device the runs used, as libtorch names it (`cpu`, `cuda:0`).
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub cpu: Cpu,
    pub gpu: Option<Gpu>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub model: String,
    pub logical_cpus: u64,
    /// libtorch's intra-op threads during the runs.
    pub torch_threads: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub name: String,
    pub uuid: Option<String>,
    pub driver: Option<String>,
    pub memory_bytes: Option<u64>,
    pub sm_count: Option<u64>,
    pub sm_clock_max_mhz: Option<u64>,
    pub power_limit_w: Option<f64>,
    /// `major.minor`, e.g. "9.0" for Hopper (from the CUDA driver).
    #[serde(default)]
    pub compute_capability: Option<String>,
    /// The CUDA driver API version, e.g. "13.0".
    #[serde(default)]
    pub cuda_driver: Option<String>,
    /// NVRTC's version ("13.0"), or why it is unavailable. Nothing the harness runs needs it
    /// today; it is recorded because libtorch's fused kernels JIT-compile through it.
    #[serde(default)]
    pub nvrtc: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Peak {
    /// The MFU denominator.
    pub flops_per_s: f64,
    /// `cuda-table`, `cuda-clock-derived`, `cpu-gemm-calibrated` or `user`.
    pub source: String,
    /// The dtype the peak is for (`bf16` on GPUs; on CPUs the faster calibrated one).
    pub dtype: String,
    pub detail: String,
    /// The GPU's datasheet figure, when the device table knows it (whichever figure won).
    #[serde(default)]
    pub table_flops_per_s: Option<f64>,
    /// SMs × clock × FLOPs per clock per SM, when the architecture's rate is known.
    #[serde(default)]
    pub clock_derived: Option<ClockDerivedPeak>,
}

/// A peak computed from the GPU's SM count, its maximum SM clock and its architecture's dense
/// bf16 tensor rate. NVML's maximum clock is the boost ceiling (1980 MHz on an H100 SXM, whose
/// datasheet figure uses 1830), so this is an upper bound on the datasheet figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockDerivedPeak {
    pub flops_per_s: f64,
    pub sm_count: u64,
    pub sm_clock_mhz: f64,
    /// Dense bf16 (fp32-accumulate) tensor FLOPs per clock per SM.
    pub flops_per_clock_per_sm: f64,
    /// The architecture the rate is for, e.g. "Hopper (sm_90)".
    pub architecture: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlopsSummary {
    /// `palm-torchtitan`: 6·(N − N_embedding) + 12·L·H·Q·T per token.
    pub convention: String,
    pub model_per_token: f64,
    /// The live Crusades leaderboard's 6·N_all per token.
    pub crusades_per_token: f64,
    pub params_total: u64,
    pub params_embedding: u64,
    /// Model FLOPs of the whole workload (per run).
    pub model_total: f64,
    pub crusades_total: f64,
}

/// One run of the submission in a fresh worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// The clock: the guest's entry call, device synchronised at both ends.
    pub wall_s: f64,
    /// The parent's clock around the whole worker (start-up, set-up, writing outputs).
    pub worker_wall_s: f64,
    pub setup_s: f64,
    pub compile_s: f64,
    pub instantiate_s: f64,
    pub tokens: u64,
    pub tokens_per_s: f64,
    pub model_flops: f64,
    /// FLOPs the host's op registry executed (the HFU numerator).
    pub hardware_flops: f64,
    pub mfu: f64,
    pub mfu_crusades: f64,
    pub hfu: f64,
    /// Window (step) latency.
    pub step_latency: Option<Latency>,
    pub phases: Phases,
    /// Per window, the loss the submission reported. A non-finite loss (which the `nan-inf`
    /// gate rejects) is written as null, since JSON has no NaN, and reads back as NaN.
    #[serde(with = "non_finite_as_null")]
    #[schemars(with = "Vec<Option<f64>>")]
    pub losses: Vec<f64>,
    /// Per window, the label tokens whose loss the run differentiated.
    pub window_tokens: Vec<u64>,
    pub op_calls: u64,
    pub peak_tensor_bytes: u64,
    pub peak_handles: u64,
    /// The same region timed by CUDA events on libtorch's stream; null on CPU.
    #[serde(default)]
    pub device_s: Option<f64>,
    /// GPU telemetry (NVML) over the timed region.
    #[serde(default = "Telemetry::not_recorded")]
    pub telemetry: Telemetry,
}

/// NVML telemetry over one timed run, or why there is none. Never an error: a CPU run, a
/// machine without the NVIDIA driver or a GPU that NVML cannot find says `unavailable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Telemetry {
    Unavailable { reason: String },
    Measured(Box<GpuTelemetry>),
}

impl Telemetry {
    pub fn not_recorded() -> Self {
        Telemetry::Unavailable {
            reason: "not recorded".into(),
        }
    }

    pub fn measured(&self) -> Option<&GpuTelemetry> {
        match self {
            Telemetry::Measured(t) => Some(t),
            Telemetry::Unavailable { .. } => None,
        }
    }
}

/// What a sampler thread polling NVML (about 10 Hz) saw during one timed run. Means are over
/// the samples inside the run; counters (energy, violation time) are differences across it,
/// interpolated to its ends. A field is null where the GPU does not support the query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuTelemetry {
    /// The GPU sampled, by UUID (never by index).
    pub gpu_uuid: String,
    /// Samples inside the timed run.
    pub samples: u64,
    /// Mean seconds between samples.
    pub interval_s: f64,
    pub sm_clock_mean_mhz: Option<f64>,
    pub sm_clock_min_mhz: Option<f64>,
    pub mem_clock_mean_mhz: Option<f64>,
    /// Energy over the run: the total-energy counter's difference (`energy-counter`), else
    /// the power samples integrated (`power-integral`).
    pub energy_j: Option<f64>,
    pub energy_source: Option<String>,
    pub j_per_token: Option<f64>,
    pub power_mean_w: Option<f64>,
    pub power_max_w: Option<f64>,
    /// NVML utilisation: the share of time a kernel ran (not a FLOP measure), 0–1.
    pub gpu_util_mean: Option<f64>,
    pub mem_util_mean: Option<f64>,
    pub temperature_max_c: Option<f64>,
    /// The clock-event (throttle) reasons seen in any sample, OR-ed, as NVML's bitmask.
    pub clock_event_reasons: u64,
    /// The same, by name (`sw-power-cap`, `hw-thermal-slowdown`, …).
    pub clock_event_reason_names: Vec<String>,
    /// Share of samples with a slowdown reason (power cap, thermal, hardware slowdown or power
    /// brake).
    pub throttled_share: f64,
    /// Share of samples where the GPU was idle (the idle reason, or 0 % utilisation).
    pub idle_share: f64,
    /// Seconds the clocks were held below their target, per NVML performance policy
    /// (`power`, `thermal`, …), over the run.
    pub violation_s: std::collections::BTreeMap<String, f64>,
    /// NVML GPM (Hopper and later): the mean share of time the SMs' tensor pipes were active,
    /// 0–1; null where GPM is unsupported.
    pub tensor_active: Option<f64>,
    /// tensor_active × SMs × mean SM clock × the architecture's tensor FLOPs per clock per
    /// SM: the most tensor FLOP/s the pipes could have done.
    pub tensor_bound_flops_per_s: Option<f64>,
    /// What a reader should know: the GPU throttled or sat idle for a large part of the run.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub count: u64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

/// Seconds per phase the guest marked; they add up to `wall_s`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phases {
    pub train_s: f64,
    pub compress_s: f64,
    pub aggregate_s: f64,
    pub other_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Score {
    /// The median MFU over the timed runs: the score.
    pub mfu: f64,
    pub mfu_crusades: f64,
    pub hfu: f64,
    pub tokens_per_s: f64,
    pub wall_s: f64,
    pub mfu_min: f64,
    pub mfu_max: f64,
    /// Coefficient of variation of the runs' MFU (σ / mean, population σ).
    pub mfu_cv: f64,
    /// Share of the median run's time in compression and in aggregation (guest-marked).
    pub compress_share: f64,
    pub aggregate_share: f64,
    pub runs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accepted,
    Rejected,
}

/// Every verification gate, by its error code. A closed set: a record names no other.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum GateCode {
    /// A loss, an upload or a final weight is NaN or infinite.
    NanInf,
    /// A window's differentiated label tokens are not the window's seqs × T.
    TokenCount,
    /// A window's loss is too far from the reference's.
    LossMismatch,
    /// A window's uploads pick too few of the reference's top-k indices.
    UploadIndexOverlap,
    /// A window's decoded upload is too far from the reference's.
    UploadValueError,
    /// Applying the upload lowers the loss much less than the reference's upload does.
    TemplarCheck,
    /// ‖θ − θ_ref‖ / ‖θ_ref − θ0‖ over all parameters is too large.
    WeightError,
    /// The same ratio for one tensor is too large.
    WeightErrorTensor,
    /// Too few parameters changed from θ0.
    ParamsChanged,
    /// A tensor moved from θ0 in another direction than the reference's update (decayed but
    /// never updated, or updated the wrong way).
    UpdateDirection,
    /// The host executed fewer FLOPs than the model needs.
    HfuBelowMfu,
    /// The MFU is above what the hardware can plausibly reach.
    MfuImplausible,
    /// The model FLOP/s claimed exceed what the GPU's tensor-pipe activity (NVML GPM) allows.
    TensorActivity,
    /// The CUDA-event time and the host's wall clock of the timed region disagree.
    TimerDivergence,
}

impl GateCode {
    pub const ALL: [GateCode; 14] = [
        GateCode::NanInf,
        GateCode::TokenCount,
        GateCode::LossMismatch,
        GateCode::UploadIndexOverlap,
        GateCode::UploadValueError,
        GateCode::TemplarCheck,
        GateCode::WeightError,
        GateCode::WeightErrorTensor,
        GateCode::ParamsChanged,
        GateCode::UpdateDirection,
        GateCode::HfuBelowMfu,
        GateCode::MfuImplausible,
        GateCode::TensorActivity,
        GateCode::TimerDivergence,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GateCode::NanInf => "nan-inf",
            GateCode::TokenCount => "token-count",
            GateCode::LossMismatch => "loss-mismatch",
            GateCode::UploadIndexOverlap => "upload-index-overlap",
            GateCode::UploadValueError => "upload-value-error",
            GateCode::TemplarCheck => "templar-check",
            GateCode::WeightError => "weight-error",
            GateCode::WeightErrorTensor => "weight-error-tensor",
            GateCode::ParamsChanged => "params-changed",
            GateCode::UpdateDirection => "update-direction",
            GateCode::HfuBelowMfu => "hfu-below-mfu",
            GateCode::MfuImplausible => "mfu-implausible",
            GateCode::TensorActivity => "tensor-activity",
            GateCode::TimerDivergence => "timer-divergence",
        }
    }
}

impl std::fmt::Display for GateCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a gate's value must relate to its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Comparison {
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "==")]
    Equal,
}

impl Comparison {
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::AtMost => "≤",
            Comparison::AtLeast => "≥",
            Comparison::Equal => "=",
        }
    }

    /// NaN never holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::AtMost => value <= threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Equal => value == threshold,
        }
    }
}

/// One gate's outcome: the worst value over the timed runs (and windows, tensors), its
/// threshold, and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub code: GateCode,
    /// What was measured, in words.
    pub measure: String,
    /// The worst value (null when it is not a number, e.g. NaN in the outputs).
    pub value: Option<f64>,
    pub comparison: Comparison,
    pub threshold: f64,
    pub passed: bool,
    /// Where the worst value is (run, window, tensor).
    pub detail: String,
}

/// A run that did not complete: the sandbox's failure code and message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFailure {
    pub code: String,
    pub message: String,
    /// `warmup` or `run N` (1-based).
    pub run: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub total_calls: u64,
    pub total_seconds: f64,
    pub total_flops: f64,
    pub ops: Vec<OpRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpRow {
    pub op: String,
    pub calls: u64,
    pub seconds: f64,
    pub flops: f64,
    pub bytes: u64,
}

/// The evaluation itself: what it cost and what it reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// The whole bench, from start to record.
    pub wall_s: f64,
    /// The sum of the timed runs' `wall_s`.
    pub timed_s: f64,
    /// wall_s / timed_s.
    pub overhead: f64,
    pub warmup_runs: u64,
    pub timed_runs: u64,
    pub compile_cached: bool,
    pub reference_cached: bool,
    pub workload_cached: bool,
    /// The gate thresholds in force (name → value), so a record can be re-judged.
    pub thresholds: std::collections::BTreeMap<String, f64>,
}

/// `Vec<f64>` whose NaN and infinities travel as JSON null (serde_json would write null for
/// them anyway, and then refuse to read it back).
mod non_finite_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let nullable: Vec<Option<f64>> =
            values.iter().map(|v| v.is_finite().then_some(*v)).collect();
        nullable.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let nullable = Vec::<Option<f64>>::deserialize(d)?;
        Ok(nullable
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    }
}

/// Reading a record back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a crusades record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record schema {found:?} is not {SCHEMA:?}; this crusades reads only {SCHEMA}")]
    Schema { found: String },
}

impl Record {
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let found = value
            .get("schema")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        if found != SCHEMA {
            return Err(RecordError::Schema { found });
        }
        Ok(serde_json::from_value(value)?)
    }

    /// The record's JSON Schema (draft 2020-12), generated from these types.
    pub fn json_schema() -> serde_json::Value {
        let schema = schemars::schema_for!(Record);
        serde_json::to_value(schema).unwrap_or_default()
    }
}
