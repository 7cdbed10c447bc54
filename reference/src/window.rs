//! One DeMo window (WORKLOAD.md, "One window"), the peers' uploads, and a whole reference run.

use std::time::Instant;

use tch::{Device, Tensor};

use crate::compress::{CompressedTensor, Compressor, CompressorConfig};
use crate::config::WorkloadConfig;
use crate::corpus::{Corpus, Page};
use crate::device::synchronize;
use crate::error::{Error, Result};
use crate::io::Upload;
use crate::model::Params;

/// Seconds spent in each phase of one window step. The phases are separated by device
/// synchronisations, so on CUDA each figure is the device's time for that phase.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WindowTimings {
    pub forward_backward_s: f64,
    /// Weight decay and the momentum update.
    pub optimizer_s: f64,
    /// DCT, top-k and quantisation of the momentum, and the error-feedback decode.
    pub compress_s: f64,
    /// Aggregation with the peers, the inverse DCT and the sign update.
    pub aggregate_s: f64,
    pub step_s: f64,
}

pub struct WindowOutput {
    pub window: u64,
    pub page: u64,
    pub loss: f64,
    pub upload: Upload,
    pub timings: WindowTimings,
}

/// The trusted trainer: θ, the momentum, and the compressor.
pub struct Trainer {
    pub config: WorkloadConfig,
    pub params: Params,
    momentum: Vec<Tensor>,
    compressor: Compressor,
}

impl Trainer {
    pub fn new(config: &WorkloadConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let params = Params::init(&config.model, config.seed, device)?;
        let momentum = params
            .tensors
            .iter()
            .map(Tensor::f_zeros_like)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            config: config.clone(),
            params,
            momentum,
            compressor: Compressor::new(CompressorConfig::from(&config.hparams), device),
        })
    }

    pub fn device(&self) -> Device {
        self.params.device()
    }

    /// The error-feedback momentum, one tensor per parameter.
    pub fn momentum(&self) -> &[Tensor] {
        &self.momentum
    }

    pub fn compressor(&mut self) -> &mut Compressor {
        &mut self.compressor
    }

    fn names(&self) -> Vec<String> {
        self.params.names().map(str::to_string).collect()
    }

    /// A peer's upload for this window: `compress(η·∇L(θ_w; page))`, with no momentum history.
    pub fn peer_upload(&mut self, page: &Page) -> Result<Upload> {
        let (x, y) = page.inputs_and_labels(self.device())?;
        let (_, grads) = self.params.loss_and_grads(&x, &y)?;
        let lr = self.config.hparams.lr;
        let _no_grad = tch::no_grad_guard();
        let tensors = grads
            .iter()
            .map(|g| self.compressor.compress(&g.f_mul_scalar(lr)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Upload {
            names: self.names(),
            tensors,
        })
    }

    /// One window on `page`, aggregating with the peers' uploads for this window.
    pub fn step(&mut self, window: u64, page: &Page, peers: &[Upload]) -> Result<WindowOutput> {
        let (x, y) = page.inputs_and_labels(self.device())?;
        self.step_batch(window, page.index, &x, &y, peers)
    }

    /// One window on a batch already on the device (`inputs`, `labels`: `[seqs, T]`).
    pub fn step_batch(
        &mut self,
        window: u64,
        page: u64,
        x: &Tensor,
        y: &Tensor,
        peers: &[Upload],
    ) -> Result<WindowOutput> {
        let device = self.device();
        for (j, p) in peers.iter().enumerate() {
            // Aggregation pairs tensors by position, so the order must be the model's.
            let same_order = p.tensors.len() == self.params.tensors.len()
                && p.names.iter().map(String::as_str).eq(self.params.names());
            if !same_order {
                return Err(Error::Shape(format!(
                    "peer upload {j} does not hold the model's {} tensors in parameter order",
                    self.params.tensors.len()
                )));
            }
        }
        let hp = self.config.hparams;
        synchronize(device);
        let t0 = Instant::now();
        let (loss, grads) = self.params.loss_and_grads(x, y)?;
        synchronize(device);
        let t1 = Instant::now();

        let _no_grad = tch::no_grad_guard();
        for ((theta, m), g) in self
            .params
            .tensors
            .iter_mut()
            .zip(&mut self.momentum)
            .zip(&grads)
        {
            let _ = theta.f_mul_scalar_(1.0 - hp.lr * hp.weight_decay)?;
            let _ = m.f_mul_scalar_(hp.momentum_decay)?;
            let _ = m.f_add_(&g.f_mul_scalar(hp.lr)?)?;
        }
        synchronize(device);
        let t2 = Instant::now();
        let mut tensors: Vec<CompressedTensor> = Vec::with_capacity(self.momentum.len());
        for m in &mut self.momentum {
            let ct = self.compressor.compress(m)?;
            let transmitted = self.compressor.decode_upload(&ct)?;
            let _ = m.f_sub_(&transmitted)?;
            tensors.push(ct);
        }
        synchronize(device);
        let t3 = Instant::now();
        for (i, theta) in self.params.tensors.iter_mut().enumerate() {
            let mut sources: Vec<&CompressedTensor> = vec![&tensors[i]];
            sources.extend(peers.iter().map(|p| &p.tensors[i]));
            let aggregate = self.compressor.aggregate(&sources)?;
            let _ = theta.f_sub_(&aggregate.f_sign()?.f_mul_scalar(hp.lr)?)?;
        }
        synchronize(device);
        let t4 = Instant::now();
        let loss = loss.f_double_value(&[])?;
        let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
        Ok(WindowOutput {
            window,
            page,
            loss,
            upload: Upload {
                names: self.names(),
                tensors,
            },
            timings: WindowTimings {
                forward_backward_s: secs(t0, t1),
                optimizer_s: secs(t1, t2),
                compress_s: secs(t2, t3),
                aggregate_s: secs(t3, t4),
                step_s: secs(t0, t4),
            },
        })
    }
}

/// What a reference run reports as it goes.
pub enum Progress<'a> {
    PeersDone { window: u64, seconds: f64 },
    WindowDone(&'a WindowOutput),
}

/// A whole reference run's outputs.
pub struct RunOutput {
    pub windows: Vec<WindowOutput>,
    /// `peers[w][j]`: peer j's upload for window w.
    pub peers: Vec<Vec<Upload>>,
    pub peer_seconds: f64,
    pub trainer: Trainer,
}

/// Runs the reference over `config.windows` windows. Peer uploads are computed at the start of
/// each window, from θ_w, outside the step's clock.
pub fn run(
    config: &WorkloadConfig,
    corpus: &Corpus,
    device: Device,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<RunOutput> {
    let mut trainer = Trainer::new(config, device)?;
    let mut windows = Vec::with_capacity(config.windows as usize);
    let mut peers_all = Vec::with_capacity(config.windows as usize);
    let mut peer_seconds = 0.0;
    for w in 0..config.windows {
        let start = Instant::now();
        let peers = (0..config.peers)
            .map(|j| trainer.peer_upload(&corpus.window_page(config.uid + 1 + j, w)?))
            .collect::<Result<Vec<_>>>()?;
        synchronize(device);
        let seconds = start.elapsed().as_secs_f64();
        peer_seconds += seconds;
        progress(Progress::PeersDone { window: w, seconds });
        let page = corpus.window_page(config.uid, w)?;
        let out = trainer.step(w, &page, &peers)?;
        progress(Progress::WindowDone(&out));
        windows.push(out);
        peers_all.push(peers);
    }
    Ok(RunOutput {
        windows,
        peers: peers_all,
        peer_seconds,
        trainer,
    })
}
