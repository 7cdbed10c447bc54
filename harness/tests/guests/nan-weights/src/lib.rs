//! Runs the baseline, then, after the last window, multiplies one parameter tensor (the token
//! embedding) in place by NaN. Losses and uploads are the baseline's; only the final weights
//! are poisoned. Must trip the **nan-inf** gate.

use crusades_baseline::run_with;
use crusades_sdk::{no_grad, Result, Submission};

struct NanWeights;

impl Submission for NanWeights {
    fn run() -> Result<()> {
        let trainer = run_with(|t, _, batch, peers| t.step(batch, peers))?;
        // The corruption: θ is a leaf that requires grad, so the in-place op goes under no-grad.
        let ng = no_grad()?;
        trainer.params.tensors[0].mul_(f64::NAN)?;
        ng.exit()
    }
}

crusades_sdk::export!(NanWeights);
