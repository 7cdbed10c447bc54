//! `crusades bench` end to end, as a competitor runs it: the baseline is accepted and its
//! record validates against the committed schema; each corrupted variant of the baseline
//! (submissions/exploits) is rejected with the code of the gate it breaks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::crusades;

fn record(o: &Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let schema: serde_json::Value = serde_json::from_str(crusades_results::RECORD_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "the record does not validate: {errors:#?}"
    );
    v
}

/// One timed run on tiny, no warm-up, a fixed peak (the gates do not depend on it): enough to
/// judge a submission, and quick.
fn quick_bench(component: &Path, cache: &Path) -> Output {
    crusades(
        &[
            "bench",
            component.to_str().unwrap(),
            "--preset",
            "tiny",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--peak-tflops",
            "1",
            "--json",
        ],
        cache,
    )
}

/// A cache shared by the tests of this binary, warmed once (workload, reference outputs), so
/// that concurrent tests only read it.
fn cache() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let baseline = common::baseline_component();
            let o = quick_bench(&baseline, dir.path());
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
            dir
        })
        .path()
}

#[test]
fn the_baseline_is_accepted_on_tiny_and_its_record_is_complete() {
    let cache = cache();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("record.json");
    let baseline: PathBuf = common::baseline_component();
    let o = crusades(
        &[
            "bench",
            baseline.to_str().unwrap(),
            "--preset",
            "tiny",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
        cache,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = record(&o);
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written, r, "--out holds the same record as --json");

    assert_eq!(r["verdict"], "accepted");
    assert!(r["error_code"].is_null());
    let gates = r["gates"].as_array().unwrap();
    assert_eq!(gates.len(), crusades_results::GateCode::ALL.len());
    for g in gates {
        assert_eq!(g["passed"], true, "{g}");
    }
    // A CPU run: the device gates have nothing to judge, and say so.
    for code in ["tensor-activity", "timer-divergence"] {
        let g = gates.iter().find(|g| g["code"] == code).unwrap();
        assert!(
            g["detail"].as_str().unwrap().starts_with("not judged"),
            "{g}"
        );
    }
    // The f32 baseline reproduces the reference exactly.
    for code in ["loss-mismatch", "upload-value-error", "weight-error"] {
        let g = gates.iter().find(|g| g["code"] == code).unwrap();
        assert_eq!(g["value"], 0.0, "{g}");
    }
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert!(r["warmup"].is_object());
    assert_eq!(r["evaluation"]["reference_cached"], true);
    assert_eq!(r["evaluation"]["compile_cached"], true);
    let tokens = r["workload"]["tokens"].as_u64().unwrap();
    assert_eq!(tokens, 3 * 8 * 128);
    let per_token = r["flops"]["model_per_token"].as_f64().unwrap();
    let peak = r["peak"]["flops_per_s"].as_f64().unwrap();
    for run in runs {
        let wall = run["wall_s"].as_f64().unwrap();
        assert!(wall > 0.0 && wall <= run["worker_wall_s"].as_f64().unwrap());
        let mfu = run["mfu"].as_f64().unwrap();
        let expected = per_token * tokens as f64 / (wall * peak);
        assert!(
            (mfu - expected).abs() <= 1e-12 * expected,
            "{mfu} vs {expected}"
        );
        assert!(run["hfu"].as_f64().unwrap() >= mfu);
        let p = &run["phases"];
        let phases: f64 = ["train_s", "compress_s", "aggregate_s", "other_s"]
            .iter()
            .map(|k| p[k].as_f64().unwrap())
            .sum();
        assert!((phases - wall).abs() < 0.01 * wall, "{phases} vs {wall}");
        assert_eq!(run["window_tokens"], serde_json::json!([1024, 1024, 1024]));
        assert!(run["device_s"].is_null(), "{}", run["device_s"]);
        assert_eq!(run["telemetry"]["status"], "unavailable");
        assert!(
            run["telemetry"]["reason"]
                .as_str()
                .unwrap()
                .contains("CPU run"),
            "{}",
            run["telemetry"]
        );
    }
    let s = &r["score"];
    let mut mfus: Vec<f64> = runs.iter().map(|r| r["mfu"].as_f64().unwrap()).collect();
    mfus.sort_by(f64::total_cmp);
    assert_eq!(
        s["mfu"].as_f64().unwrap(),
        mfus[1],
        "the score is the median run's MFU"
    );
    assert_eq!(s["mfu_min"].as_f64().unwrap(), mfus[0]);
    assert_eq!(s["mfu_max"].as_f64().unwrap(), mfus[2]);
    assert!(r["profile"]["ops"].as_array().unwrap().len() > 10);
    assert_eq!(r["peak"]["source"], "cpu-gemm-calibrated");
    assert_eq!(r["harness"]["contract_version"], "0.2.0");
    assert_eq!(r["submission"]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn each_corrupted_variant_is_rejected_with_its_gate_code() {
    let cache = cache();
    for (variant, code) in [
        ("skip-window", "token-count"),
        ("half-tokens", "token-count"),
        ("no-error-feedback", "upload-index-overlap"),
        ("wrong-topk", "upload-index-overlap"),
        ("zero-upload", "upload-value-error"),
        ("nan-weights", "nan-inf"),
    ] {
        let component = common::corrupted(variant);
        let o = quick_bench(&component, cache);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{variant}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r = record(&o);
        assert_eq!(r["verdict"], "rejected", "{variant}");
        assert_eq!(r["error_code"], code, "{variant}: {:#}", r["gates"]);
        let gate = r["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["code"] == code)
            .unwrap();
        assert_eq!(gate["passed"], false, "{variant}: {gate}");
        assert!(
            !gate["detail"].as_str().unwrap().is_empty(),
            "{variant}: {gate}"
        );
    }
}

#[test]
fn a_submission_that_fails_to_load_is_rejected_with_its_failure_code() {
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not a component at all").unwrap();
    let o = crusades(
        &[
            "bench",
            bogus.to_str().unwrap(),
            "--preset",
            "tiny",
            "--json",
        ],
        &tmp.path().join("cache"),
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = record(&o);
    assert_eq!(r["verdict"], "rejected");
    assert_eq!(r["error_code"], "not-wasm");
    assert_eq!(r["failure"]["run"], "compile");
    assert!(r["runs"].as_array().unwrap().is_empty());
    assert!(r["score"].is_null());
}

#[test]
fn bad_flags_are_input_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let baseline = common::baseline_component();
    for args in [
        vec!["--gate", "loss=1"],
        vec!["--runs", "0"],
        vec!["--peak-tflops", "-3"],
    ] {
        let mut all = vec!["bench", baseline.to_str().unwrap(), "--preset", "tiny"];
        all.extend(args.iter().copied());
        let o = crusades(&all, tmp.path());
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn cuda_without_a_driver_is_an_input_error_that_names_what_is_missing() {
    if crusades_gpu::cuda::driver_present() {
        return; // a GPU machine: CUDA is there
    }
    let tmp = tempfile::tempdir().unwrap();
    let baseline = common::baseline_component();
    for command in [
        vec![
            "bench",
            baseline.to_str().unwrap(),
            "--preset",
            "tiny",
            "--device",
            "cuda",
        ],
        vec![
            "run",
            baseline.to_str().unwrap(),
            "--preset",
            "tiny",
            "--device",
            "cuda:1",
        ],
        vec!["hardware", "--device", "cuda"],
    ] {
        let o = crusades(&command, tmp.path());
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(2), "{command:?}: {out}");
        assert!(
            out.contains("libcuda.so.1") && out.contains("NVIDIA driver"),
            "{command:?}: {out}"
        );
        assert!(!out.contains("panicked"), "{command:?}: {out}");
    }
    // The hardware report still describes the CPU and says what CUDA lacks, as JSON too.
    let o = crusades(&["hardware", "--device", "cuda", "--json"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["usable"], false);
    assert!(
        v["cuda"]["driver"]["error"]
            .as_str()
            .unwrap()
            .contains("libcuda"),
        "{v}"
    );
    assert!(v["cpu"]["logical_cpus"].as_u64().unwrap() >= 1);
    assert!(v["gpu"].is_null() && v["peak"].is_null());
}

#[test]
fn the_fast_example_passes_every_gate_on_tiny() {
    let cache = cache();
    let fast = common::fast_component();
    let o = quick_bench(&fast, cache);
    let r = record(&o);
    assert_eq!(r["verdict"], "accepted", "{:#}", r["gates"]);
    assert_eq!(o.status.code(), Some(0));
    // bf16 compute: close to the reference, not equal to it.
    let loss = r["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["code"] == "loss-mismatch")
        .unwrap();
    assert!(loss["value"].as_f64().unwrap() > 0.0, "{loss}");
}
