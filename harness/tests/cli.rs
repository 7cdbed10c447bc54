//! The `crusades` binary, driven as a user drives it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crusades_reference::io::{self, HostTensor};
use tch::{Device, Kind, Tensor};

fn crusades(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crusades"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a refusal: exit code 2, a message naming `needle`, and no panic.
fn assert_refused(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2; stderr: {err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn write_tensors(path: &Path, tensors: &[(&str, Tensor)]) {
    let named: Vec<_> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), HostTensor::from_tensor(t).unwrap()))
        .collect();
    io::write(path, &named, &Default::default()).unwrap();
}

fn gradients(seed: i64) -> Vec<(&'static str, Tensor)> {
    tch::manual_seed(seed);
    vec![
        ("w", Tensor::randn([128, 192], (Kind::Float, Device::Cpu))),
        ("b", Tensor::randn([100], (Kind::Float, Device::Cpu))),
    ]
}

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(p.exists(), "{} is missing: run ci/setup first", p.display());
    p
}

#[test]
fn reference_json_reports_every_window() {
    let o = crusades(&["reference", "--windows", "2", "--peers", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["workload_hash"].as_str().unwrap().len(), 64);
    assert_eq!(j["config"]["preset"], "tiny");
    let windows = j["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    for w in windows {
        let loss = w["loss"].as_f64().unwrap();
        assert!(loss > 5.0 && loss < 9.0, "{loss}");
        assert!(w["step_s"].as_f64().unwrap() >= w["compress_s"].as_f64().unwrap());
    }
    let share = j["summary"]["compression_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0);
}

#[test]
fn reference_outputs_are_byte_identical_across_processes_and_readable_by_python() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let o = crusades(&[
            "reference",
            "--windows",
            "2",
            "--peers",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let files = [
        "window-0.upload.safetensors",
        "window-1.upload.safetensors",
        "peers/window-1.peer-1.safetensors",
        "final.safetensors",
        "run.json",
    ];
    for f in files {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs"
        );
    }
    let check = r#"
import sys, json
from safetensors import safe_open
with safe_open(sys.argv[1], framework="numpy") as f:
    meta = f.metadata()
    assert meta["format"] == "crusades-upload/1", meta
    name = "model.layers.0.self_attn.q_proj.weight"
    idx, codes, lookup = f.get_tensor(name + ".idx"), f.get_tensor(name + ".codes"), f.get_tensor(name + ".lookup")
    assert str(idx.dtype) == "uint16" and str(codes.dtype) == "uint8", (idx.dtype, codes.dtype)
    assert idx.shape == (2, 2, 32) and codes.shape == idx.shape, idx.shape
    assert idx.max() < 64 * 64 and lookup.shape == (256,)
    assert json.loads(meta[name + ".shape"]) == [128, 128]
with safe_open(sys.argv[2], framework="numpy") as f:
    w = f.get_tensor("lm_head.weight")
    assert w.shape == (1024, 128) and str(w.dtype) == "float32"
print("ok")
"#;
    let o = Command::new(python())
        .args([
            "-c",
            check,
            a.join(files[0]).to_str().unwrap(),
            a.join("final.safetensors").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python could not read our files: {}",
        stderr(&o)
    );
}

#[test]
fn compress_writes_a_self_describing_upload_and_aggregate_applies_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("g.safetensors");
    write_tensors(&input, &gradients(1));
    let own = dir.path().join("own.safetensors");
    let o = crusades(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        own.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["tensors"][0]["chunk"], serde_json::json!([64, 64]));
    assert_eq!(report["tensors"][1]["chunk"], serde_json::json!([1, 50]));
    let file = io::read(&own, Device::Cpu).unwrap();
    for part in [
        "w.idx",
        "w.codes",
        "w.shift",
        "w.scale",
        "w.lookup",
        "w.decoded",
        "b.idx",
        "b.decoded",
    ] {
        assert!(file.get(part).is_some(), "missing {part}");
    }
    assert_eq!(file.get("w.idx").unwrap().size(), [2, 3, 32]);
    assert_eq!(file.get("w.decoded").unwrap().size(), [128, 192]);
    assert_eq!(file.metadata["w.shape"], "[128,192]");

    let peer_in = dir.path().join("p.safetensors");
    write_tensors(&peer_in, &gradients(2));
    let peer = dir.path().join("peer.safetensors");
    assert!(crusades(&[
        "compress",
        peer_in.to_str().unwrap(),
        "-o",
        peer.to_str().unwrap()
    ])
    .status
    .success());
    let agg = dir.path().join("agg.safetensors");
    let o = crusades(&[
        "aggregate",
        own.to_str().unwrap(),
        peer.to_str().unwrap(),
        "-o",
        agg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = io::read(&agg, Device::Cpu).unwrap();
    let update = out.get("w.update").unwrap();
    assert_eq!(update.size(), [128, 192]);
    let allowed = update.eq(0.0).logical_or(&update.abs().eq(1.0)).all();
    assert!(
        bool::try_from(allowed).unwrap(),
        "the update must be a sign"
    );
    let aggregate = out.get("w.aggregate").unwrap();
    assert!(bool::try_from(aggregate.sign().eq_tensor(update).all()).unwrap());
}

#[test]
fn bad_input_is_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let good = d("g.safetensors");
    write_tensors(Path::new(&good), &gradients(3));

    assert_refused(
        &crusades(&["reference", "--preset", "huge"]),
        "unknown preset 'huge'",
    );
    assert_refused(
        &crusades(&["reference", "--set", "heads=3"]),
        "multiple of heads",
    );
    assert_refused(
        &crusades(&["reference", "--device", "tpu"]),
        "unknown device",
    );
    assert_refused(
        &crusades(&["compress", &d("missing.safetensors"), "-o", &d("o")]),
        "missing.safetensors",
    );

    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(d("truncated.safetensors"), &bytes[..bytes.len() - 7]).unwrap();
    assert_refused(
        &crusades(&["compress", &d("truncated.safetensors"), "-o", &d("o")]),
        "not a valid safetensors file",
    );
    std::fs::write(d("text.safetensors"), "hello, this is not a tensor file").unwrap();
    assert_refused(
        &crusades(&["compress", &d("text.safetensors"), "-o", &d("o")]),
        "text.safetensors",
    );

    write_tensors(
        Path::new(&d("ints.safetensors")),
        &[("t", Tensor::arange(64, (Kind::Int64, Device::Cpu)))],
    );
    assert_refused(
        &crusades(&["compress", &d("ints.safetensors"), "-o", &d("o")]),
        "dtype",
    );
    write_tensors(
        Path::new(&d("cube.safetensors")),
        &[("t", Tensor::zeros([4, 4, 4], (Kind::Float, Device::Cpu)))],
    );
    assert_refused(
        &crusades(&["compress", &d("cube.safetensors"), "-o", &d("o")]),
        "1-D or 2-D",
    );
    let nan = Tensor::from_slice(&[1.0f32, f32::NAN, 2.0, 3.0]);
    write_tensors(Path::new(&d("nan.safetensors")), &[("t", nan)]);
    assert_refused(
        &crusades(&["compress", &d("nan.safetensors"), "-o", &d("o")]),
        "NaN",
    );
    assert_refused(
        &crusades(&["compress", &good, "-o", &d("o"), "--bins", "1000"]),
        "bins",
    );

    // Uploads whose shapes do not match.
    let a = d("a.up");
    assert!(crusades(&["compress", &good, "-o", &a]).status.success());
    write_tensors(
        Path::new(&d("other.safetensors")),
        &[
            ("w", Tensor::ones([64, 192], (Kind::Float, Device::Cpu))),
            ("b", Tensor::ones([100], (Kind::Float, Device::Cpu))),
        ],
    );
    let b = d("b.up");
    assert!(crusades(&["compress", &d("other.safetensors"), "-o", &b])
        .status
        .success());
    assert_refused(
        &crusades(&["aggregate", &a, &b, "-o", &d("agg")]),
        "[64, 192]",
    );
    // A tensor file that is not an upload.
    assert_refused(
        &crusades(&["aggregate", &a, &good, "-o", &d("agg")]),
        "metadata has no 'format'",
    );
    // An upload with an index out of its chunk.
    let file = io::read(Path::new(&a), Device::Cpu).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for (n, t) in &file.tensors {
        let host = if n == "b.idx" {
            HostTensor::u16_from(&(t + 60)).unwrap()
        } else if n.ends_with(".idx") {
            HostTensor::u16_from(t).unwrap()
        } else {
            HostTensor::from_tensor(t).unwrap()
        };
        tensors.push((n.clone(), host));
    }
    io::write(Path::new(&d("forged.up")), &tensors, &file.metadata).unwrap();
    assert_refused(
        &crusades(&["aggregate", &a, &d("forged.up"), "-o", &d("agg")]),
        "outside the chunk",
    );
    assert!(
        !Path::new(&d("agg")).exists(),
        "a refused aggregate must not leave a file"
    );
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if tch::Cuda::is_available() {
        return;
    }
    let o = crusades(&["reference", "--device", "cuda", "--windows", "1"]);
    assert_refused(&o, "CUDA");
    assert!(stderr(&o).contains("--device cpu"), "{}", stderr(&o));
}

#[test]
fn reference_trains_on_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.bin");
    let tokens: Vec<u8> = (0..3000u32)
        .flat_map(|i| ((i * 7919 % 1024) as u16).to_le_bytes())
        .collect();
    std::fs::write(&path, &tokens).unwrap();
    let p = path.to_str().unwrap();
    let o = crusades(&[
        "reference",
        "--corpus",
        p,
        "--windows",
        "1",
        "--peers",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["config"]["corpus"]["kind"], "file");
    assert_eq!(j["config"]["corpus"]["tokens"], 3000);
    assert_eq!(j["config"]["corpus"]["sha256"].as_str().unwrap().len(), 64);
    assert!(
        j["windows"][0]["page"].as_u64().unwrap() < 2,
        "3000 tokens hold two pages of 8×129"
    );

    assert_refused(
        &crusades(&["reference", "--corpus", p, "--set", "vocab=512"]),
        "outside the vocabulary",
    );
    assert_refused(
        &crusades(&["reference", "--corpus", p, "--set", "seq_len=4096"]),
        "one page needs",
    );
}

#[test]
fn help_lists_the_commands() {
    let o = crusades(&["--help"]);
    let text = stdout(&o);
    for c in ["reference", "compress", "aggregate", "compress-bench"] {
        assert!(text.contains(c), "{text}");
    }
}
