//! Helpers for tests (this crate's and others'): plausible records without running a bench.

use std::collections::BTreeMap;

use crate::record::*;

/// A plausible record of a CPU bench on `tiny` (competition `0.2.0/tiny/cpu`): two timed runs,
/// a few gates (the loss gate fails when `verdict` is rejected, and gives `error_code`), a
/// small per-op profile, score `score` (its median MFU).
pub fn sample_record(sha256: &str, score: f64, verdict: Verdict, created_at: &str) -> Record {
    let accepted = verdict == Verdict::Accepted;
    let run = |mfu: f64| Run {
        wall_s: 0.19,
        worker_wall_s: 0.45,
        setup_s: 0.05,
        compile_s: 0.0,
        instantiate_s: 0.002,
        tokens: 3072,
        tokens_per_s: 15_849.0,
        model_flops: 10.88e9,
        hardware_flops: 11.2e9,
        mfu,
        mfu_crusades: mfu * 1.11,
        hfu: mfu * 1.15,
        step_latency: Some(Latency {
            count: 3,
            mean_s: 0.064,
            p50_s: 0.062,
            p90_s: 0.07,
            p99_s: 0.07,
            max_s: 0.07,
        }),
        phases: Phases {
            train_s: 0.135,
            compress_s: 0.035,
            aggregate_s: 0.02,
            other_s: 0.0,
        },
        losses: vec![6.93, 6.91, 6.88],
        window_tokens: vec![1024; 3],
        op_calls: 7_412,
        peak_tensor_bytes: 48 << 20,
        peak_handles: 612,
        device_s: None,
        telemetry: Telemetry::Unavailable {
            reason: "a CPU run".into(),
        },
    };
    let gate = |code: GateCode, measure: &str, value: f64, comparison, threshold: f64| Gate {
        code,
        measure: measure.into(),
        value: Some(value),
        comparison,
        threshold,
        passed: comparison.holds(value, threshold),
        detail: "run 1, window 0".into(),
    };
    let gates = vec![
        gate(
            GateCode::NanInf,
            "non-finite losses, uploads and final weights",
            0.0,
            Comparison::AtMost,
            0.0,
        ),
        gate(
            GateCode::TokenCount,
            "label tokens whose loss was differentiated, per window",
            1024.0,
            Comparison::Equal,
            1024.0,
        ),
        gate(
            GateCode::LossMismatch,
            "|loss − loss_ref| per window",
            if accepted { 0.0 } else { 0.42 },
            Comparison::AtMost,
            0.01,
        ),
        gate(
            GateCode::WeightError,
            "‖θ − θ_ref‖ / ‖θ_ref − θ0‖ over all parameters",
            0.0,
            Comparison::AtMost,
            1.0,
        ),
        gate(
            GateCode::ParamsChanged,
            "fraction of parameters changed / the reference's",
            1.0,
            Comparison::AtLeast,
            0.75,
        ),
    ];
    let op = |op: &str, calls: u64, seconds: f64, flops: f64, bytes: u64| OpRow {
        op: op.into(),
        calls,
        seconds,
        flops,
        bytes,
    };
    Record {
        schema: SCHEMA.into(),
        created_at: created_at.into(),
        harness: Harness {
            version: "0.1.0".into(),
            git_revision: Some("9613e7c".into()),
            contract_version: "0.2.0".into(),
            libtorch: "2.11.0".into(),
        },
        submission: Submission {
            sha256: sha256.into(),
            bytes: 139_500,
            source: "submissions/baseline".into(),
        },
        workload: Workload {
            preset: "tiny".into(),
            hash: "6c83a1e87b0bea27".into(),
            config: serde_json::json!({"model": {"vocab": 1024, "layers": 2}, "windows": 3}),
            seed: 0,
            uid: 1,
            windows: 3,
            peers: 3,
            tokens_per_window: 1024,
            tokens: 3072,
            device: "cpu".into(),
        },
        hardware: Hardware {
            cpu: Cpu {
                model: "AMD EPYC 7B13".into(),
                logical_cpus: 2,
                torch_threads: 2,
            },
            gpu: None,
        },
        peak: Peak {
            flops_per_s: 406.48e9,
            source: "cpu-gemm-calibrated".into(),
            dtype: "bf16".into(),
            detail: "2048×2048 GEMM on 2 libtorch thread(s)".into(),
            table_flops_per_s: None,
            clock_derived: None,
        },
        flops: FlopsSummary {
            convention: "palm-torchtitan".into(),
            model_per_token: 3.54e6,
            crusades_per_token: 3.94e6,
            params_total: 656_384,
            params_embedding: 131_072,
            model_total: 10.88e9,
            crusades_total: 12.1e9,
        },
        warmup: Some(run(score)),
        runs: vec![run(score * 0.9), run(score), run(score * 1.05)],
        score: Some(Score {
            mfu: score,
            mfu_crusades: score * 1.11,
            hfu: score * 1.15,
            tokens_per_s: 15_849.0,
            wall_s: 0.19,
            mfu_min: score * 0.9,
            mfu_max: score * 1.05,
            mfu_cv: 0.06,
            compress_share: 0.18,
            aggregate_share: 0.11,
            runs: 3,
        }),
        error_code: gates
            .iter()
            .find(|g| !g.passed)
            .map(|g| g.code.as_str().to_string()),
        gates,
        verdict,
        failure: None,
        profile: Some(Profile {
            total_calls: 7_412,
            total_seconds: 0.17,
            total_flops: 11.2e9,
            ops: vec![
                op("matmul", 420, 0.09, 10.1e9, 96 << 20),
                op("softmax", 60, 0.02, 0.4e9, 24 << 20),
                op("dct", 90, 0.03, 0.5e9, 12 << 20),
                op("topk", 90, 0.02, 0.0, 4 << 20),
            ],
        }),
        evaluation: Evaluation {
            wall_s: 2.4,
            timed_s: 0.57,
            overhead: 4.2,
            warmup_runs: 1,
            timed_runs: 3,
            compile_cached: true,
            reference_cached: true,
            workload_cached: true,
            thresholds: BTreeMap::from([
                ("loss_abs".to_string(), 0.01),
                ("weight_error".to_string(), 1.0),
            ]),
        },
    }
}

/// A GPU known only by its name (what hardware comparisons look at).
pub fn gpu(name: &str) -> Gpu {
    Gpu {
        name: name.into(),
        uuid: None,
        driver: None,
        memory_bytes: None,
        sm_count: None,
        sm_clock_max_mhz: None,
        power_limit_w: None,
        compute_capability: None,
        cuda_driver: None,
        nvrtc: None,
    }
}
