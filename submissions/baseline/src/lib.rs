//! The reference algorithm (`reference/src/window.rs`, `model.rs`, `compress.rs`) written as a
//! submission. It issues exactly the native reference's libtorch ops, in the same order and with
//! the same arguments, so on the same device its uploads and final weights are bit-identical to
//! the reference's.
//!
//! It is also a library (feature `export` off): [`Trainer::step`] is the composition of public
//! stages, [`Trainer::loss_and_grads`], [`Trainer::decay_and_accumulate_momentum`],
//! [`Trainer::compress`] and [`Trainer::aggregate_and_apply`], and [`run_with`] is the window
//! loop with the step supplied, so another guest can re-compose them with one change.

pub mod model;

use crusades_sdk::compress::{Compressor, CompressorConfig, Geometry};
use crusades_sdk::workload::{self, Batch, Config, Phase, Upload};
use crusades_sdk::{Error, NoGrad, Result, Submission, Tensor};

use model::Params;

/// The trusted trainer: θ (host-owned), the momentum, and the compressor.
pub struct Trainer {
    pub config: Config,
    pub params: Params,
    /// m, one per parameter, in parameter order.
    pub momentum: Vec<Tensor>,
    /// The chunk geometry of each parameter.
    pub geometries: Vec<Geometry>,
    pub compressor: Compressor,
}

impl Trainer {
    pub fn new(config: Config) -> Result<Self> {
        let compressor = Compressor::new(CompressorConfig::from(&config.hparams));
        compressor.config.validate()?;
        let params = Params::new(config.model, workload::parameters())?;
        let momentum = params
            .tensors
            .iter()
            .map(Tensor::zeros_like)
            .collect::<Result<Vec<_>>>()?;
        let geometries = params
            .tensors
            .iter()
            .map(|t| compressor.geometry(&t.shape()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            params,
            momentum,
            geometries,
            compressor,
        })
    }

    /// Every peer must upload one tensor per parameter: aggregation pairs tensors by position.
    pub fn check_peers(&self, peers: &[Vec<Upload>]) -> Result<()> {
        let n = self.params.tensors.len();
        for (j, p) in peers.iter().enumerate() {
            if p.len() != n {
                return Err(Error::guest(format!(
                    "peer upload {j} holds {} tensors, the model has {n}",
                    p.len()
                )));
            }
        }
        Ok(())
    }

    /// Stage 1 (phase `Train`): the window's loss (detached) and the gradient of every
    /// parameter.
    pub fn loss_and_grads(&mut self, batch: &Batch) -> Result<(Tensor, Vec<Tensor>)> {
        workload::mark_phase(Phase::Train);
        self.params.loss_and_grads(&batch.inputs, &batch.labels)
    }

    /// Stage 2 (phase `Compress`, under no-grad): per parameter, the decoupled weight decay
    /// `θ ← θ·(1 − η·λ)` and the momentum `m ← β·m + η·g`.
    pub fn decay_and_accumulate_momentum(&self, grads: &[Tensor], _: &NoGrad) -> Result<()> {
        let hp = self.config.hparams;
        workload::mark_phase(Phase::Compress);
        for ((theta, m), g) in self.params.tensors.iter().zip(&self.momentum).zip(grads) {
            theta.mul_(1.0 - hp.lr * hp.weight_decay)?;
            m.mul_(hp.momentum_decay)?;
            m.add_(&g.mul(hp.lr)?)?;
        }
        Ok(())
    }

    /// Stage 3 (still `Compress`, under no-grad): per parameter, the upload
    /// `quantize(topk(DCT(chunk(m))))`, then the error feedback `m ← m − decoded(upload)`.
    /// Returns the uploads, one per parameter.
    pub fn compress(&mut self, _: &NoGrad) -> Result<Vec<Upload>> {
        let mut uploads: Vec<Upload> = Vec::with_capacity(self.momentum.len());
        for (m, g) in self.momentum.iter().zip(&self.geometries) {
            let ct = self.compressor.compress(m, g)?;
            let transmitted = self.compressor.decode_upload(&ct, g)?;
            m.sub_(&transmitted)?;
            uploads.push(ct);
        }
        Ok(uploads)
    }

    /// Stage 4 (phase `Aggregate`, under no-grad): per parameter, aggregate the own upload with
    /// the peers' and apply `θ ← θ − η·sign(A)`.
    pub fn aggregate_and_apply(
        &mut self,
        uploads: &[Upload],
        peers: &[Vec<Upload>],
        _: &NoGrad,
    ) -> Result<()> {
        self.check_peers(peers)?;
        if uploads.len() != self.params.tensors.len() {
            return Err(Error::guest(format!(
                "{} uploads for {} parameters",
                uploads.len(),
                self.params.tensors.len()
            )));
        }
        let lr = self.config.hparams.lr;
        workload::mark_phase(Phase::Aggregate);
        for (i, theta) in self.params.tensors.iter().enumerate() {
            let mut sources: Vec<&Upload> = vec![&uploads[i]];
            sources.extend(peers.iter().map(|p| &p[i]));
            let aggregate = self.compressor.aggregate(&self.geometries[i], &sources)?;
            theta.sub_(&aggregate.sign()?.mul(lr)?)?;
        }
        Ok(())
    }

    /// One window on `batch`, aggregating with the peers' uploads for this window: the four
    /// stages in order. Returns the loss and this window's upload, one entry per parameter.
    pub fn step(&mut self, batch: &Batch, peers: &[Vec<Upload>]) -> Result<(Tensor, Vec<Upload>)> {
        self.check_peers(peers)?;
        let (loss, grads) = self.loss_and_grads(batch)?;
        let no_grad = crusades_sdk::no_grad()?;
        self.decay_and_accumulate_momentum(&grads, &no_grad)?;
        let uploads = self.compress(&no_grad)?;
        self.aggregate_and_apply(&uploads, peers, &no_grad)?;
        Ok((loss, uploads))
    }
}

/// The baseline's run with `step` in place of [`Trainer::step`]: for every window in order,
/// its batch and peer uploads in, `step(trainer, window, batch, peers)`, and the loss and
/// uploads it returns submitted. Returns the trainer after the last window.
pub fn run_with(
    mut step: impl FnMut(&mut Trainer, u32, &Batch, &[Vec<Upload>]) -> Result<(Tensor, Vec<Upload>)>,
) -> Result<Trainer> {
    let config = workload::config();
    let mut trainer = Trainer::new(config)?;
    for w in 0..config.windows {
        let batch = workload::batch(w)?;
        let peers = workload::peer_uploads(w)?;
        let (loss, upload) = step(&mut trainer, w, &batch, &peers)?;
        workload::mark_phase(Phase::Other);
        workload::submit(w, &loss, &upload)?;
    }
    Ok(trainer)
}

/// The baseline submission.
pub struct Baseline;

impl Submission for Baseline {
    fn run() -> Result<()> {
        run_with(|trainer, _, batch, peers| trainer.step(batch, peers)).map(drop)
    }
}

#[cfg(feature = "export")]
crusades_sdk::export!(Baseline);
