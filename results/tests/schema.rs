//! The record's wire form: the committed JSON Schema is the one the types generate, records
//! validate against it, and broken records do not.

use std::collections::BTreeMap;

use crusades_results::record::*;
use proptest::prelude::*;

fn sample(mfu: f64, verdict: Verdict) -> Record {
    let run = Run {
        wall_s: 1.5,
        worker_wall_s: 2.0,
        setup_s: 0.1,
        compile_s: 0.2,
        instantiate_s: 0.001,
        tokens: 3072,
        tokens_per_s: 2048.0,
        model_flops: 1e12,
        hardware_flops: 1.5e12,
        mfu,
        mfu_crusades: mfu * 1.1,
        hfu: mfu * 1.5,
        step_latency: Some(Latency {
            count: 3,
            mean_s: 0.5,
            p50_s: 0.5,
            p90_s: 0.6,
            p99_s: 0.6,
            max_s: 0.6,
        }),
        phases: Phases {
            train_s: 1.0,
            compress_s: 0.3,
            aggregate_s: 0.15,
            other_s: 0.05,
        },
        losses: vec![6.9, 6.8, 6.7],
        window_tokens: vec![1024; 3],
        op_calls: 7000,
        peak_tensor_bytes: 1 << 20,
        peak_handles: 500,
        device_s: None,
        telemetry: Telemetry::Unavailable {
            reason: "a CPU run".into(),
        },
    };
    let mut gpu_run = run.clone();
    gpu_run.device_s = Some(1.4995);
    gpu_run.telemetry = Telemetry::Measured(Box::new(GpuTelemetry {
        gpu_uuid: "GPU-3c1a9f2e-0123-4567-89ab-cdef00112233".into(),
        samples: 15,
        interval_s: 0.1,
        sm_clock_mean_mhz: Some(1975.0),
        sm_clock_min_mhz: Some(1905.0),
        mem_clock_mean_mhz: Some(2619.0),
        energy_j: Some(975.0),
        energy_source: Some("energy-counter".into()),
        j_per_token: Some(975.0 / 3072.0),
        power_mean_w: Some(650.0),
        power_max_w: Some(699.0),
        gpu_util_mean: Some(0.99),
        mem_util_mean: Some(0.41),
        temperature_max_c: Some(61.0),
        clock_event_reasons: 0x4,
        clock_event_reason_names: vec!["sw-power-cap".into()],
        throttled_share: 0.1,
        idle_share: 0.0,
        violation_s: BTreeMap::from([("power".to_string(), 0.15)]),
        tensor_active: Some(0.45),
        tensor_bound_flops_per_s: Some(0.45 * 1975e6 * 132.0 * 4096.0),
        warnings: Vec::new(),
    }));
    Record {
        schema: SCHEMA.into(),
        created_at: "2026-11-25T12:00:00Z".into(),
        harness: Harness {
            version: "0.1.0".into(),
            git_revision: Some("abc123".into()),
            contract_version: "0.2.0".into(),
            libtorch: "2.11.0".into(),
        },
        submission: Submission {
            sha256: "a".repeat(64),
            bytes: 1234,
            source: "x.wasm".into(),
        },
        workload: Workload {
            preset: "tiny".into(),
            hash: "0123456789abcdef".into(),
            config: serde_json::json!({"model": {"vocab": 1024}}),
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
                model: "AMD EPYC".into(),
                logical_cpus: 2,
                torch_threads: 2,
            },
            gpu: None,
        },
        peak: Peak {
            flops_per_s: 989e12,
            source: "cuda-table".into(),
            dtype: "bf16".into(),
            detail: "NVIDIA H100 80GB HBM3: dense bf16 989 TFLOP/s (datasheet)".into(),
            table_flops_per_s: Some(989e12),
            clock_derived: Some(ClockDerivedPeak {
                flops_per_s: 132.0 * 1980e6 * 4096.0,
                sm_count: 132,
                sm_clock_mhz: 1980.0,
                flops_per_clock_per_sm: 4096.0,
                architecture: "Hopper (sm_90)".into(),
            }),
        },
        flops: FlopsSummary {
            convention: "palm-torchtitan".into(),
            model_per_token: 1e6,
            crusades_per_token: 1.2e6,
            params_total: 200_000,
            params_embedding: 100_000,
            model_total: 3.072e9,
            crusades_total: 3.6e9,
        },
        warmup: Some(run.clone()),
        runs: vec![gpu_run, run],
        score: Some(Score {
            mfu,
            mfu_crusades: mfu * 1.1,
            hfu: mfu * 1.5,
            tokens_per_s: 2048.0,
            wall_s: 1.5,
            mfu_min: mfu,
            mfu_max: mfu,
            mfu_cv: 0.0,
            compress_share: 0.2,
            aggregate_share: 0.1,
            runs: 2,
        }),
        gates: vec![Gate {
            code: GateCode::LossMismatch,
            measure: "max |loss − loss_ref| over windows".into(),
            value: Some(0.0),
            comparison: Comparison::AtMost,
            threshold: 0.05,
            passed: verdict == Verdict::Accepted,
            detail: "run 1, window 0".into(),
        }],
        verdict,
        error_code: (verdict == Verdict::Rejected).then(|| "loss-mismatch".into()),
        failure: None,
        profile: Some(Profile {
            total_calls: 7000,
            total_seconds: 1.2,
            total_flops: 1.5e12,
            ops: vec![OpRow {
                op: "matmul".into(),
                calls: 300,
                seconds: 0.5,
                flops: 1e12,
                bytes: 1 << 30,
            }],
        }),
        evaluation: Evaluation {
            wall_s: 6.0,
            timed_s: 3.0,
            overhead: 2.0,
            warmup_runs: 1,
            timed_runs: 2,
            compile_cached: false,
            reference_cached: true,
            workload_cached: true,
            thresholds: BTreeMap::from([("loss_abs".to_string(), 0.05)]),
        },
    }
}

fn committed_schema() -> serde_json::Value {
    serde_json::from_str(crusades_results::RECORD_SCHEMA).expect("the committed schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&committed_schema()).expect("the committed schema is a valid schema")
}

#[test]
fn the_committed_schema_is_the_one_the_types_generate() {
    let generated = Record::json_schema();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/record-v1.schema.json");
    if std::env::var_os("CRUSADES_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(path, text).unwrap();
        return;
    }
    assert_eq!(
        committed_schema(),
        generated,
        "the record types changed: review the wire change, bump SCHEMA if it is incompatible, \
         and regenerate {path} with CRUSADES_BLESS=1 cargo test -p crusades-results"
    );
}

#[test]
fn records_validate_and_round_trip() {
    let v = validator();
    for verdict in [Verdict::Accepted, Verdict::Rejected] {
        let record = sample(0.25, verdict);
        let json = serde_json::to_value(&record).unwrap();
        let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let bytes = serde_json::to_vec(&record).unwrap();
        assert_eq!(Record::from_json(&bytes).unwrap(), record);
    }
}

#[test]
fn broken_records_do_not_validate() {
    let v = validator();
    let good = serde_json::to_value(sample(0.25, Verdict::Accepted)).unwrap();
    type Breakage = Box<dyn Fn(&mut serde_json::Value)>;
    let breakages: Vec<(&str, Breakage)> = vec![
        (
            "unknown verdict",
            Box::new(|r| r["verdict"] = "maybe".into()),
        ),
        (
            "unknown gate code",
            Box::new(|r| r["gates"][0]["code"] = "vibes".into()),
        ),
        (
            "mfu as text",
            Box::new(|r| r["score"]["mfu"] = "0.3".into()),
        ),
        (
            "missing runs",
            Box::new(|r| {
                r.as_object_mut().unwrap().remove("runs");
            }),
        ),
        (
            "an extra field",
            Box::new(|r| r["submission"]["sha1"] = "x".into()),
        ),
        (
            "a negative token count",
            Box::new(|r| r["workload"]["tokens"] = (-1).into()),
        ),
    ];
    for (what, breakage) in breakages {
        let mut bad = good.clone();
        breakage(&mut bad);
        assert!(!v.is_valid(&bad), "a record with {what} validated");
    }
}

#[test]
fn telemetry_is_tagged_by_status_and_older_runs_without_it_still_parse() {
    let json = serde_json::to_value(sample(0.25, Verdict::Accepted)).unwrap();
    assert_eq!(json["runs"][0]["telemetry"]["status"], "measured");
    assert_eq!(json["runs"][1]["telemetry"]["status"], "unavailable");
    assert_eq!(json["runs"][1]["telemetry"]["reason"], "a CPU run");
    let v = validator();
    let mut bad = json.clone();
    bad["runs"][0]["telemetry"]["status"] = "guessed".into();
    assert!(!v.is_valid(&bad));
    let mut bad = json.clone();
    bad["runs"][0]["telemetry"]["energy_j"] = "a lot".into();
    assert!(!v.is_valid(&bad));
    // A run written before device_s and telemetry existed reads as "not recorded".
    let mut old = json["runs"][1].clone();
    old.as_object_mut().unwrap().remove("telemetry");
    old.as_object_mut().unwrap().remove("device_s");
    let run: Run = serde_json::from_value(old).unwrap();
    assert_eq!(run.device_s, None);
    assert_eq!(run.telemetry, Telemetry::not_recorded());
}

#[test]
fn another_schema_version_is_refused_by_name() {
    let mut json = serde_json::to_value(sample(0.25, Verdict::Accepted)).unwrap();
    json["schema"] = "crusades.record/0".into();
    let err = Record::from_json(&serde_json::to_vec(&json).unwrap()).unwrap_err();
    assert!(err.to_string().contains("crusades.record/0"), "{err}");
}

#[test]
fn gate_codes_serialise_as_their_names() {
    for code in GateCode::ALL {
        assert_eq!(
            serde_json::to_value(code).unwrap(),
            serde_json::Value::from(code.as_str())
        );
    }
}

proptest! {
    #[test]
    fn any_measured_values_round_trip(mfu in 0.0f64..1.0, wall in 1e-6f64..1e5, loss in -1e3f64..1e3) {
        let mut record = sample(mfu, Verdict::Accepted);
        record.runs[0].wall_s = wall;
        record.runs[0].losses[1] = loss;
        let bytes = serde_json::to_vec(&record).unwrap();
        prop_assert_eq!(Record::from_json(&bytes).unwrap(), record.clone());
        prop_assert!(validator().is_valid(&serde_json::to_value(&record).unwrap()));
    }
}

/// A submission that reports a NaN loss is rejected (`nan-inf`), and its record must still be
/// storable: the NaN travels as null and reads back as NaN.
#[test]
fn a_non_finite_loss_round_trips_as_null() {
    let mut record = sample(0.25, Verdict::Rejected);
    record.runs[0].losses = vec![f64::NAN, 2.5, f64::INFINITY];
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(
        json["runs"][0]["losses"],
        serde_json::json!([null, 2.5, null])
    );
    assert!(validator().is_valid(&json));
    let back = Record::from_json(&serde_json::to_vec(&record).unwrap()).unwrap();
    let losses = &back.runs[0].losses;
    assert!(losses[0].is_nan() && losses[1] == 2.5 && losses[2].is_nan());
}
