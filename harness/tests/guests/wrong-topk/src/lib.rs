//! Selects, per chunk, the k largest *signed* DCT coefficients instead of the k largest by
//! |value|: same shapes, wrong indices (error feedback applied to what it sent, as the
//! baseline does). Must trip the **upload index overlap** gate: its indices are not the
//! reference's.

use crusades_baseline::run_with;
use crusades_sdk::compress::{Compressor, Geometry};
use crusades_sdk::workload::Upload;
use crusades_sdk::{no_grad, Dtype, Result, Submission, Tensor};

/// `Compressor::compress` with the corruption: `coeffs.topk` where it has `coeffs.abs().topk`.
fn compress_signed(c: &mut Compressor, m: &Tensor, g: &Geometry) -> Result<Upload> {
    let coeffs = c.encode(&m.to_dtype(Dtype::F32)?, g)?;
    let (_, idx) = coeffs.topk(g.k(c.config.topk), -1, true, false)?;
    let (idx, _) = idx.sort(-1, false)?;
    let (codes, shift, scale, lookup) = c.quantize(&coeffs.gather(-1, &idx)?)?;
    Ok(Upload {
        idx,
        codes,
        shift,
        scale,
        lookup,
    })
}

struct WrongTopk;

impl Submission for WrongTopk {
    fn run() -> Result<()> {
        run_with(|t, _, batch, peers| {
            let (loss, grads) = t.loss_and_grads(batch)?;
            let ng = no_grad()?;
            t.decay_and_accumulate_momentum(&grads, &ng)?;
            let mut uploads = Vec::with_capacity(t.momentum.len());
            for (m, g) in t.momentum.iter().zip(&t.geometries) {
                let upload = compress_signed(&mut t.compressor, m, g)?;
                m.sub_(&t.compressor.decode_upload(&upload, g)?)?;
                uploads.push(upload);
            }
            t.aggregate_and_apply(&uploads, peers, &ng)?;
            Ok((loss, uploads))
        })
        .map(drop)
    }
}

crusades_sdk::export!(WrongTopk);
