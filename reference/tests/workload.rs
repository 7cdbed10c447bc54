//! End-to-end properties of the reference workload on the `tiny` preset.

use std::collections::BTreeMap;

use crusades_reference::compress::Compressor;
use crusades_reference::config::WorkloadConfig;
use crusades_reference::corpus::Corpus;
use crusades_reference::io::{self, HostTensor, Upload};
use crusades_reference::model::{detached_copy, Params};
use crusades_reference::window::{self, Trainer};
use tch::{Device, Kind, Tensor};

fn tiny() -> WorkloadConfig {
    let mut c = WorkloadConfig::from_preset("tiny").unwrap();
    c.windows = 2;
    c.peers = 2;
    c
}

fn upload_bytes(u: &Upload) -> Vec<u8> {
    let mut v = Vec::new();
    for ct in &u.tensors {
        for t in [&ct.idx, &ct.codes, &ct.shift, &ct.scale, &ct.lookup] {
            v.extend(HostTensor::from_tensor(t).unwrap().data);
        }
    }
    v
}

fn weight_bytes(p: &Params) -> Vec<u8> {
    p.tensors
        .iter()
        .flat_map(|t| HostTensor::from_tensor(t).unwrap().data)
        .collect()
}

#[test]
fn the_same_workload_gives_byte_identical_uploads_and_weights() {
    let c = tiny();
    let corpus = Corpus::synthetic(&c).unwrap();
    let a = window::run(&c, &corpus, Device::Cpu, |_| {}).unwrap();
    let b = window::run(&c, &corpus, Device::Cpu, |_| {}).unwrap();
    for (wa, wb) in a.windows.iter().zip(&b.windows) {
        assert_eq!(
            upload_bytes(&wa.upload),
            upload_bytes(&wb.upload),
            "window {}",
            wa.window
        );
        assert_eq!(wa.loss.to_bits(), wb.loss.to_bits());
    }
    for (pa, pb) in a.peers.iter().flatten().zip(b.peers.iter().flatten()) {
        assert_eq!(upload_bytes(pa), upload_bytes(pb));
    }
    assert_eq!(
        weight_bytes(&a.trainer.params),
        weight_bytes(&b.trainer.params)
    );

    // And a different seed is a different workload.
    let mut other = c.clone();
    other.seed += 1;
    let o = window::run(&other, &corpus, Device::Cpu, |_| {}).unwrap();
    assert_ne!(
        weight_bytes(&o.trainer.params),
        weight_bytes(&a.trainer.params)
    );
    assert_ne!(other.workload_hash(), c.workload_hash());
}

#[test]
fn one_window_is_decay_then_a_sign_step_with_error_feedback() {
    let c = tiny();
    let hp = c.hparams;
    let corpus = Corpus::synthetic(&c).unwrap();
    let mut trainer = Trainer::new(&c, Device::Cpu).unwrap();
    let theta0: Vec<Tensor> = trainer
        .params
        .tensors
        .iter()
        .map(|t| detached_copy(t).unwrap())
        .collect();
    let page = corpus.window_page(c.uid, 0).unwrap();
    let (x, y) = page.inputs_and_labels(Device::Cpu).unwrap();
    let (_, grads) = trainer.params.loss_and_grads(&x, &y).unwrap();
    let peers: Vec<Upload> = (0..c.peers)
        .map(|j| {
            trainer
                .peer_upload(&corpus.window_page(c.uid + 1 + j, 0).unwrap())
                .unwrap()
        })
        .collect();
    let out = trainer.step(0, &page, &peers).unwrap();
    assert!(out.loss.is_finite());

    let mut decoder = Compressor::new((&hp).into(), Device::Cpu);
    let mut moved = 0i64;
    let mut total = 0i64;
    for i in 0..theta0.len() {
        // θ1 = θ0·(1 − ηλ) − η·s with s ∈ {−1, 0, 1} elementwise.
        let decayed = theta0[i].shallow_clone() * (1.0 - hp.lr * hp.weight_decay);
        let steps = (decayed - &trainer.params.tensors[i].detach()) / hp.lr;
        let off = (&steps - steps.round()).abs().max().double_value(&[]);
        assert!(
            off < 1e-2,
            "{}: the step is not a multiple of η (off by {off})",
            trainer.params.specs[i].name
        );
        assert!(steps.abs().max().double_value(&[]) < 1.0 + 1e-2);
        moved += steps.round().count_nonzero(None::<i64>).int64_value(&[]);
        total += steps.numel() as i64;

        // m1 = η·g − decode(upload): the error feedback keeps what was not transmitted.
        let transmitted = decoder.decode_upload(&out.upload.tensors[i]).unwrap();
        let want = grads[i].shallow_clone() * hp.lr - transmitted;
        let diff = (&trainer.momentum()[i] - &want)
            .abs()
            .max()
            .double_value(&[]);
        let scale = want.abs().max().double_value(&[]).max(1e-12);
        assert!(
            diff / scale < 1e-4,
            "{}: momentum off by {diff}",
            trainer.params.specs[i].name
        );
    }
    assert!(
        moved as f64 / total as f64 > 0.9,
        "only {moved} of {total} weights moved"
    );
}

#[test]
fn uploads_and_weights_round_trip_through_safetensors() {
    let c = tiny();
    let corpus = Corpus::synthetic(&c).unwrap();
    let mut trainer = Trainer::new(&c, Device::Cpu).unwrap();
    let upload = trainer.peer_upload(&corpus.page(3).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.safetensors");
    let config = (&c.hparams).into();
    let mut meta = BTreeMap::new();
    meta.insert("note".to_string(), "x".to_string());
    io::write_upload(&path, &upload, None, &config, &meta).unwrap();
    let (back, back_config) = io::read_upload(&path, Device::Cpu).unwrap();
    assert_eq!(back_config, config);
    assert_eq!(back.names, upload.names);
    assert_eq!(upload_bytes(&back), upload_bytes(&upload));
    // Canonical bytes: writing what was read gives the same file.
    let again = dir.path().join("v.safetensors");
    io::write_upload(&again, &back, None, &back_config, &meta).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );

    let w = dir.path().join("w.safetensors");
    let named: Vec<_> = trainer
        .params
        .specs
        .iter()
        .zip(&trainer.params.tensors)
        .map(|(s, t)| (s.name.clone(), HostTensor::from_tensor(t).unwrap()))
        .collect();
    io::write(&w, &named, &BTreeMap::new()).unwrap();
    let file = io::read(&w, Device::Cpu).unwrap();
    let mut fresh = Params::init(&c.model, c.seed + 9, Device::Cpu).unwrap();
    fresh.load(&file.tensors).unwrap();
    assert_eq!(weight_bytes(&fresh), weight_bytes(&trainer.params));
    assert_eq!(file.get("lm_head.weight").unwrap().kind(), Kind::Float);
}

#[test]
fn malformed_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    for bytes in [
        &b""[..],
        b"\x08\0\0\0\0\0\0\0{}",
        b"\xff\xff\xff\xff\xff\xff\xff\x7fxx",
        b"\x10\0\0\0\0\0\0\0{\"a\":1}        ",
    ] {
        std::fs::write(&path, bytes).unwrap();
        let e = io::read(&path, Device::Cpu).err().expect("must be refused");
        assert!(e.to_string().contains("bad.safetensors"), "{e}");
    }
    let missing = io::read(&dir.path().join("nope.safetensors"), Device::Cpu)
        .err()
        .unwrap();
    assert!(missing.to_string().contains("nope.safetensors"));
}

#[test]
fn a_peer_upload_for_another_model_is_refused() {
    let c = tiny();
    let corpus = Corpus::synthetic(&c).unwrap();
    let mut trainer = Trainer::new(&c, Device::Cpu).unwrap();
    let page = corpus.page(0).unwrap();
    let mut peer = trainer.peer_upload(&page).unwrap();
    peer.names.swap(1, 2);
    let e = trainer
        .step(0, &page, &[peer])
        .err()
        .expect("must be refused")
        .to_string();
    assert!(e.contains("parameter order"), "{e}");
}
