//! Trains exactly like the baseline (its own true upload feeds the error feedback and the
//! aggregation), but the upload it *submits* decodes to zero: same indices, codes and scale,
//! with the shift and every lookup entry 0, so `lookup[q] + shift` is 0 everywhere. Must trip
//! the **upload value error** gate.

use crusades_baseline::run_with;
use crusades_sdk::workload::Upload;
use crusades_sdk::{Result, Submission};

struct ZeroUpload;

impl Submission for ZeroUpload {
    fn run() -> Result<()> {
        run_with(|t, _, batch, peers| {
            let (loss, uploads) = t.step(batch, peers)?;
            // The corruption: what is submitted dequantises to zero.
            let zeroed = uploads
                .into_iter()
                .map(|u| {
                    Ok(Upload {
                        shift: u.shift.zeros_like()?,
                        lookup: u.lookup.zeros_like()?,
                        ..u
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((loss, zeroed))
        })
        .map(drop)
    }
}

crusades_sdk::export!(ZeroUpload);
