//! The upload wire format, pinned byte for byte by a golden file.
//!
//! The upload is built by hand from exact values, so the golden pins the format (names, dtypes,
//! shapes, metadata, header layout and data order), not libtorch's arithmetic. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p crusades-reference --test wire_format` only when the format
//! changes on purpose, and bump `UPLOAD_FORMAT` then.

use std::collections::BTreeMap;
use std::path::Path;

use crusades_reference::compress::{CompressedTensor, CompressorConfig, Geometry};
use crusades_reference::io::{self, Upload, UPLOAD_FORMAT};
use tch::{Device, Kind, Tensor};

fn hand_built_upload() -> (Upload, CompressorConfig) {
    let config = CompressorConfig {
        chunk: 4,
        topk: 3,
        bins: 8,
        range_sigmas: 6.0,
    };
    let ints = |v: &[i64], shape: [i64; 2]| Tensor::from_slice(v).view(shape);
    let lookup = |offset: f32| {
        Tensor::from_slice(
            &(0..8)
                .map(|b| (b as f32 - 4.0) * 0.25 + offset)
                .collect::<Vec<_>>(),
        )
    };
    let matrix = CompressedTensor {
        // [8, 4] in 4×4 chunks: 2 chunks of 16, k = 3.
        geometry: Geometry::new(&[8, 4], 4).unwrap(),
        idx: ints(&[0, 5, 15, 1, 2, 3], [2, 3]),
        codes: ints(&[0, 4, 7, 3, 3, 6], [2, 3]).to_kind(Kind::Uint8),
        shift: Tensor::from(0.5f32),
        scale: Tensor::from(0.125f32),
        lookup: lookup(0.0),
    };
    let vector = CompressedTensor {
        // [6] in chunks of 3: 2 chunks, k = 3 (the whole chunk).
        geometry: Geometry::new(&[6], 4).unwrap(),
        idx: ints(&[0, 1, 2, 0, 1, 2], [2, 3]),
        codes: ints(&[1, 2, 3, 5, 6, 7], [2, 3]).to_kind(Kind::Uint8),
        shift: Tensor::from(-1.0f32),
        scale: Tensor::from(1.0f32),
        lookup: lookup(0.5),
    };
    let upload = Upload {
        names: vec!["w".into(), "b".into()],
        tensors: vec![matrix, vector],
    };
    (upload, config)
}

#[test]
fn upload_files_match_the_golden_bytes() {
    let (upload, config) = hand_built_upload();
    for ct in &upload.tensors {
        ct.validate("hand-built", config.bins).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload.safetensors");
    let mut extra = BTreeMap::new();
    extra.insert("window".to_string(), "7".to_string());
    io::write_upload(&path, &upload, None, &config, &extra).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/upload-v1.safetensors");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &bytes).unwrap();
    }
    let want = std::fs::read(&golden).expect("the golden file exists (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        bytes, want,
        "the upload wire format changed; if on purpose, bump UPLOAD_FORMAT and regenerate"
    );

    // The golden file reads back into the same upload.
    let (back, back_config) = io::read_upload(&golden, Device::Cpu).unwrap();
    assert_eq!(back_config, config);
    assert_eq!(back.names, ["w", "b"]);
    assert_eq!(back.tensors[0].geometry.shape, [8, 4]);
    assert_eq!(
        Vec::<i64>::try_from(&back.tensors[0].idx.flatten(0, -1)).unwrap(),
        [0, 5, 15, 1, 2, 3]
    );
    assert_eq!(
        Vec::<u8>::try_from(&back.tensors[1].codes.flatten(0, -1)).unwrap(),
        [1, 2, 3, 5, 6, 7]
    );
    assert_eq!(back.tensors[1].shift.double_value(&[]), -1.0);

    // Its header, as a person reads it.
    let header_len = u64::from_le_bytes(want[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&want[8..8 + header_len]).unwrap();
    assert_eq!(header["__metadata__"]["format"], UPLOAD_FORMAT);
    assert_eq!(header["__metadata__"]["w.shape"], "[8,4]");
    assert_eq!(header["w.idx"]["dtype"], "U16");
    assert_eq!(header["w.idx"]["shape"], serde_json::json!([2, 1, 3]));
    assert_eq!(header["b.idx"]["shape"], serde_json::json!([2, 3]));
    assert_eq!(header["w.codes"]["dtype"], "U8");
    assert_eq!(header["w.shift"]["shape"], serde_json::json!([]));
    assert_eq!(header["b.lookup"]["shape"], serde_json::json!([8]));
}
