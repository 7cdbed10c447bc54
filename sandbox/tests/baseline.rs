//! The baseline submission (the reference algorithm written against the SDK) must reproduce the
//! native reference bit for bit on CPU in f32: every window's loss and upload, and the final
//! weights. This is the proof that the sandbox changes nothing numerically.

mod common;

use crusades_reference::config::WorkloadConfig;
use crusades_reference::corpus::Corpus;
use crusades_reference::window;
use crusades_sandbox::runner::Sandbox;
use crusades_sandbox::session::Session;
use crusades_sandbox::worker::store_peer_uploads;
use crusades_sandbox::Limits;
use tch::{Device, Tensor};

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.kind() == b.kind() && a.size() == b.size() && a.equal(b)
}

fn baseline_matches_reference(preset: &str) {
    let config = WorkloadConfig::from_preset(preset).unwrap();
    let corpus = Corpus::synthetic(&config).unwrap();
    let native = window::run(&config, &corpus, Device::Cpu, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    store_peer_uploads(dir.path(), &config, &native.peers).unwrap();

    let sandbox = Sandbox::new().unwrap();
    let compiled = sandbox.compile(&common::baseline()).unwrap();
    let session = Session::new(&config, &corpus, dir.path(), Device::Cpu).unwrap();
    let run = sandbox
        .run(&compiled, session, Limits::default())
        .unwrap_or_else(|f| panic!("the baseline failed on {preset}: {f}"));
    let session = &run.state.session;

    assert_eq!(session.submitted.len(), native.windows.len());
    for (w, (got, want)) in session.submitted.iter().zip(&native.windows).enumerate() {
        assert_eq!(
            got.loss.double_value(&[]),
            want.loss,
            "{preset} window {w}: loss"
        );
        for ((name, g), r) in session
            .names
            .iter()
            .zip(&got.upload)
            .zip(&want.upload.tensors)
        {
            let parts = [
                ("idx", &g.idx, &r.idx),
                ("codes", &g.codes, &r.codes),
                ("shift", &g.shift, &r.shift),
                ("scale", &g.scale, &r.scale),
                ("lookup", &g.lookup, &r.lookup),
            ];
            for (part, a, b) in parts {
                assert!(same(a, b), "{preset} window {w}: {name}.{part} differs");
            }
        }
    }
    for ((name, got), want) in session
        .names
        .iter()
        .zip(&session.params)
        .zip(&native.trainer.params.tensors)
    {
        assert!(same(got, want), "{preset}: final {name} differs");
    }
    // The profile saw the work: matmuls dominate the FLOPs, and every window has a latency.
    let profile = run.state.accounting.report();
    assert_eq!(profile.windows.as_ref().unwrap().count, config.windows);
    assert!(profile
        .ops
        .iter()
        .any(|o| o.op == "linear" && o.flops > 0.0));
    assert!(profile
        .ops
        .iter()
        .any(|o| o.op == "autograd_grad" && o.flops > 0.0));
}

#[test]
fn baseline_equals_reference_bit_for_bit_on_tiny() {
    baseline_matches_reference("tiny");
}

#[test]
fn baseline_equals_reference_bit_for_bit_on_small() {
    baseline_matches_reference("small");
}
