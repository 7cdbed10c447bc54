//! The reference algorithm (`reference/src/window.rs`, `model.rs`, `compress.rs`) written as a
//! submission. It issues exactly the native reference's libtorch ops, in the same order and with
//! the same arguments, so on the same device its uploads and final weights are bit-identical to
//! the reference's.

mod model;

use crusades_sdk::compress::{Compressor, CompressorConfig, Geometry};
use crusades_sdk::workload::{self, Config, Phase, Upload};
use crusades_sdk::{Error, Result, Submission, Tensor};

use model::Params;

/// The trusted trainer: θ (host-owned), the momentum, and the compressor.
struct Trainer {
    config: Config,
    params: Params,
    momentum: Vec<Tensor>,
    geometries: Vec<Geometry>,
    compressor: Compressor,
}

impl Trainer {
    fn new(config: Config) -> Result<Self> {
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

    /// One window on `(inputs, labels)`, aggregating with the peers' uploads for this window.
    /// Returns the loss and this window's upload, one entry per parameter.
    fn step(
        &mut self,
        batch: &workload::Batch,
        peers: &[Vec<Upload>],
    ) -> Result<(Tensor, Vec<Upload>)> {
        let n = self.params.tensors.len();
        for (j, p) in peers.iter().enumerate() {
            // Aggregation pairs tensors by position.
            if p.len() != n {
                return Err(Error::guest(format!(
                    "peer upload {j} holds {} tensors, the model has {n}",
                    p.len()
                )));
            }
        }
        let hp = self.config.hparams;
        workload::mark_phase(Phase::Train);
        let (loss, grads) = self.params.loss_and_grads(&batch.inputs, &batch.labels)?;

        let _no_grad = crusades_sdk::no_grad()?;
        workload::mark_phase(Phase::Compress);
        for ((theta, m), g) in self.params.tensors.iter().zip(&self.momentum).zip(&grads) {
            theta.mul_(1.0 - hp.lr * hp.weight_decay)?;
            m.mul_(hp.momentum_decay)?;
            m.add_(&g.mul(hp.lr)?)?;
        }
        let mut uploads: Vec<Upload> = Vec::with_capacity(n);
        for (m, g) in self.momentum.iter().zip(&self.geometries) {
            let ct = self.compressor.compress(m, g)?;
            let transmitted = self.compressor.decode_upload(&ct, g)?;
            m.sub_(&transmitted)?;
            uploads.push(ct);
        }
        workload::mark_phase(Phase::Aggregate);
        for (i, theta) in self.params.tensors.iter().enumerate() {
            let mut sources: Vec<&Upload> = vec![&uploads[i]];
            sources.extend(peers.iter().map(|p| &p[i]));
            let aggregate = self.compressor.aggregate(&self.geometries[i], &sources)?;
            theta.sub_(&aggregate.sign()?.mul(hp.lr)?)?;
        }
        Ok((loss, uploads))
    }
}

struct Baseline;

impl Submission for Baseline {
    fn run() -> Result<()> {
        let config = workload::config();
        let mut trainer = Trainer::new(config)?;
        for w in 0..config.windows {
            let batch = workload::batch(w)?;
            let peers = workload::peer_uploads(w)?;
            let (loss, upload) = trainer.step(&batch, &peers)?;
            workload::mark_phase(Phase::Other);
            workload::submit(w, &loss, &upload)?;
        }
        Ok(())
    }
}

crusades_sdk::export!(Baseline);
