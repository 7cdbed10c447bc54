//! Trains each window on only the first half of its sequences (inputs and labels narrowed to
//! seqs/2) and submits that loss. Must trip the **token-count** gate: the host counts half of
//! each window's label tokens through a differentiated `cross_entropy`.

use crusades_baseline::run_with;
use crusades_sdk::workload::Batch;
use crusades_sdk::{Result, Submission};

struct HalfTokens;

impl Submission for HalfTokens {
    fn run() -> Result<()> {
        run_with(|t, _, batch, peers| {
            // The corruption: the batch loses its second half of sequences.
            let half = batch.inputs.shape()[0] / 2;
            let narrowed = Batch {
                inputs: batch.inputs.narrow(0, 0, half)?,
                labels: batch.labels.narrow(0, 0, half)?,
            };
            t.step(&narrowed, peers)
        })
        .map(drop)
    }
}

crusades_sdk::export!(HalfTokens);
