//! Skips window 1: no forward or backward, θ and the momentum untouched; it submits window 0's
//! loss and upload again. Must trip the **token-count** gate: the host counts, per window, the
//! label tokens whose loss went through `cross_entropy` with an autograd graph, and window 1
//! has none.

use crusades_baseline::Trainer;
use crusades_sdk::workload::{self, Phase};
use crusades_sdk::{Result, Submission};

struct SkipWindow;

impl Submission for SkipWindow {
    fn run() -> Result<()> {
        let config = workload::config();
        let mut trainer = Trainer::new(config)?;
        let mut last = None;
        for w in 0..config.windows {
            let batch = workload::batch(w)?;
            let peers = workload::peer_uploads(w)?;
            // The corruption: window 1 is not trained; the previous window's results stand in.
            if w != 1 {
                last = Some(trainer.step(&batch, &peers)?);
            }
            let (loss, upload) = last.as_ref().expect("window 0 was trained");
            workload::mark_phase(Phase::Other);
            workload::submit(w, loss, upload)?;
        }
        Ok(())
    }
}

crusades_sdk::export!(SkipWindow);
