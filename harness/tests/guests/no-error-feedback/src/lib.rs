//! Drops the error feedback: the upload is compressed from the momentum, but
//! `m ← m − decoded(upload)` is skipped, so what was sent stays in m. Must trip the **upload
//! index overlap** gate: from window 1 on, the top-k indices repeat the previous window's
//! instead of moving on.

use crusades_baseline::run_with;
use crusades_sdk::workload::Upload;
use crusades_sdk::{no_grad, Result, Submission};

struct NoErrorFeedback;

impl Submission for NoErrorFeedback {
    fn run() -> Result<()> {
        run_with(|t, _, batch, peers| {
            let (loss, grads) = t.loss_and_grads(batch)?;
            let ng = no_grad()?;
            t.decay_and_accumulate_momentum(&grads, &ng)?;
            // The corruption: Trainer::compress without its `m.sub_(decoded)`.
            let uploads = (t.momentum.iter().zip(&t.geometries))
                .map(|(m, g)| t.compressor.compress(m, g))
                .collect::<Result<Vec<Upload>>>()?;
            t.aggregate_and_apply(&uploads, peers, &ng)?;
            Ok((loss, uploads))
        })
        .map(drop)
    }
}

crusades_sdk::export!(NoErrorFeedback);
