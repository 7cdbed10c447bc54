//! The workload interface (WORKLOAD.md): the configuration, the host-owned parameters, each
//! window's batch and peer uploads in, each window's loss and upload out.

use crate::bindings::crusades::submission::workload as raw;
use crate::{Result, Tensor};

/// Templar's hyper-parameters: lr, weight_decay, momentum_decay, chunk, topk, bins,
/// range_sigmas, eval_lr_factor.
pub use raw::HyperParams;
/// The model's shape: vocab, d_model, layers, heads, kv_heads, ffn, seq_len, rms_eps,
/// rope_theta.
pub use raw::ModelConfig;
/// The whole configuration: model, hparams, seqs_per_window, windows, peers.
pub use raw::WorkloadConfig as Config;

impl ModelConfig {
    pub fn head_dim(&self) -> i64 {
        self.d_model as i64 / (self.heads as i64).max(1)
    }
}

/// One window's tokens: i64 `[seqs, T]` inputs and the next token for each.
#[derive(Debug)]
pub struct Batch {
    pub inputs: Tensor,
    pub labels: Tensor,
}

/// One parameter's compressed upload (WORKLOAD.md, "Compression"): per chunk the top-k
/// indices (i64 `[chunks, k]`, ascending within a chunk) and their codes (u8 `[chunks, k]`),
/// the quantisation's shift and scale (f32 scalars) and its centroid lookup (f32 `[bins]`).
#[derive(Debug)]
pub struct Upload {
    pub idx: Tensor,
    pub codes: Tensor,
    pub shift: Tensor,
    pub scale: Tensor,
    pub lookup: Tensor,
}

impl From<raw::UploadTensor> for Upload {
    fn from(u: raw::UploadTensor) -> Self {
        Self {
            idx: Tensor(u.idx),
            codes: Tensor(u.codes),
            shift: Tensor(u.shift),
            scale: Tensor(u.scale),
            lookup: Tensor(u.lookup),
        }
    }
}

impl Upload {
    /// The same upload in new host tensors, so that it outlives the handles it was read from.
    pub fn copy(&self) -> Result<Upload> {
        Ok(Upload {
            idx: self.idx.copy()?,
            codes: self.codes.copy()?,
            shift: self.shift.copy()?,
            scale: self.scale.copy()?,
            lookup: self.lookup.copy()?,
        })
    }

    fn view(&self) -> raw::UploadView<'_> {
        raw::UploadView {
            idx: &self.idx.0,
            codes: &self.codes.0,
            shift: &self.shift.0,
            scale: &self.scale.0,
            lookup: &self.lookup.0,
        }
    }
}

/// What the guest is doing, for the time profile: `Train` (forward, loss, backward),
/// `Compress` (momentum, DCT, top-k, quantisation, error feedback), `Aggregate` (decoding the
/// uploads, the sign update) or `Other`. Not scored.
pub use raw::Phase;

/// From now on the guest is in `phase`: the host attributes the wall time until the next mark
/// to it (`crusades bench` reports the shares).
pub fn mark_phase(phase: Phase) {
    raw::mark_phase(phase)
}

/// The workload's configuration.
pub fn config() -> Config {
    raw::config()
}

/// θ: the host-owned f32 leaves (they require grad), named, in the model's parameter order.
/// Update them in place; the host reads the final weights from them.
pub fn parameters() -> Vec<(String, Tensor)> {
    raw::parameters()
        .into_iter()
        .map(|p| (p.name, Tensor(p.value)))
        .collect()
}

/// Window `window`'s batch. Windows go in order: window w opens after w − 1 is submitted.
pub fn batch(window: u32) -> Result<Batch> {
    let b = raw::batch(window)?;
    Ok(Batch {
        inputs: Tensor(b.inputs),
        labels: Tensor(b.labels),
    })
}

/// The peers' uploads for the open window: `peers[j][i]` is peer j's upload of parameter i.
pub fn peer_uploads(window: u32) -> Result<Vec<Vec<Upload>>> {
    Ok(raw::peer_uploads(window)?
        .into_iter()
        .map(|peer| peer.into_iter().map(Upload::from).collect())
        .collect())
}

/// Closes the open window with its loss (a one-element tensor) and this miner's upload, one
/// entry per parameter in parameter order. The host copies them.
///
/// The host also counts the window's label tokens whose loss went through the `cross_entropy`
/// op with an autograd graph (micro-batches add up); `crusades bench` requires exactly the
/// window's seqs × T (gate `token-count`). Compute the loss with `cross_entropy`.
pub fn submit<'a>(
    window: u32,
    loss: &Tensor,
    uploads: impl IntoIterator<Item = &'a Upload>,
) -> Result<()> {
    let views: Vec<raw::UploadView<'_>> = uploads.into_iter().map(Upload::view).collect();
    raw::submit(window, &loss.0, &views)
}
