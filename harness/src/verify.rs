//! What the verification gates measure: a run's outputs (its uploads, losses and final θ, as
//! the worker wrote them after the clock stopped) against the reference's on the same
//! workload. Pure measurement; the thresholds and the verdict live in [`crate::gates`].

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crusades_reference::compress::{CompressedTensor, Compressor, CompressorConfig};
use crusades_reference::config::WorkloadConfig;
use crusades_reference::corpus::Corpus;
use crusades_reference::io::{self, Upload};
use crusades_reference::model::{detached_copy, Params};
use crusades_sandbox::worker::{theta_path, upload_path, WEIGHTS_FILE};

/// The reference run's outputs, with θ at the start of every window.
pub struct Reference {
    pub losses: Vec<f64>,
    pub uploads: Vec<Upload>,
    pub weights: Vec<Tensor>,
    /// `thetas[w]`: θ at the start of window w (θ0 for w = 0).
    pub thetas: Vec<Vec<Tensor>>,
    /// The loss on each window's page at `thetas[w]`, and after applying the reference's own
    /// upload alone (Templar's check).
    pub templar: Vec<(f64, f64)>,
    pub changed_fraction: f64,
    /// The same fraction for each tensor, in parameter order.
    pub changed_per_tensor: Vec<f64>,
}

/// One run against the reference.
#[derive(Debug, Clone, Default)]
pub struct Measurements {
    /// Where a non-finite number was found (empty: nowhere).
    pub nonfinite: Vec<String>,
    pub window_tokens: Vec<u64>,
    pub losses: Vec<f64>,
    /// Per window: the mean over all chunks of all tensors of |top-k ∩ top-k_ref| / k, and the
    /// tensor with the lowest mean.
    pub overlap: Vec<(f64, String, f64)>,
    /// Per window: ‖D − D_ref‖ / ‖D_ref‖ over the dequantised, decompressed coefficients of
    /// every tensor, and the worst tensor's own ratio.
    pub value_error: Vec<(f64, String, f64)>,
    /// Per window: the loss after applying this run's upload alone to θ_w.
    pub templar_after: Vec<f64>,
    /// ‖θ − θ_ref‖ / ‖θ_ref − θ0‖ over all parameters.
    pub weight_error: f64,
    /// The largest per-tensor ratio, and its tensor.
    pub weight_error_tensor: (f64, String),
    pub changed_fraction: f64,
    /// The tensor whose changed fraction is the smallest share of the reference's, and that
    /// share: a tensor left at θ0 (frozen) reads 0 however small it is.
    pub changed_tensor: (f64, String),
    /// The smallest cosine, over tensors, between this run's update θ − θ0 and the reference's
    /// θ_ref − θ0, and its tensor. A tensor that only decays changes every element (so the
    /// changed fraction misses it) and stays about as far from θ_ref as θ0 is (so the weight
    /// error, normalised by the update, reads about 1), but it points the wrong way.
    pub update_cosine: (f64, String),
}

/// Problems reading outputs are the harness's (the worker wrote them), so they are plain errors.
type Result<T> = anyhow::Result<T>;

/// The reference's Templar losses, cached in its output directory.
const TEMPLAR_FILE: &str = "templar.json";

fn upload_digest(dir: &Path, window: usize) -> Result<String> {
    let path = upload_path(dir, window);
    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(crusades_sandbox::runner::sha256_hex(&bytes))
}

fn read_uploads(dir: &Path, windows: usize, device: Device) -> Result<Vec<Upload>> {
    (0..windows)
        .map(|w| {
            let path = upload_path(dir, w);
            io::read_upload(&path, device)
                .map(|(u, _)| u)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        })
        .collect()
}

fn read_weights(path: &Path, names: &[String], device: Device) -> Result<Vec<Tensor>> {
    let file = io::read(path, device).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    names
        .iter()
        .map(|n| {
            file.get(n)
                .map(Tensor::shallow_clone)
                .ok_or_else(|| anyhow::anyhow!("{} has no tensor {n}", path.display()))
        })
        .collect()
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.f_to_kind(Kind::Double)?.f_double_value(&[])?)
}

fn sum_sq(t: &Tensor) -> Result<f64> {
    let t = t.f_to_kind(Kind::Double)?;
    scalar(&t.f_mul(&t)?.f_sum(Kind::Double)?)
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    scalar(
        &a.f_to_kind(Kind::Double)?
            .f_mul(&b.f_to_kind(Kind::Double)?)?
            .f_sum(Kind::Double)?,
    )
}

fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(scalar(&t.f_isfinite()?.f_all()?.f_to_kind(Kind::Int64)?)? == 1.0)
}

/// The fraction of θ's elements that differ from θ0, over all of θ and per tensor.
fn changed_fractions(theta: &[Tensor], theta0: &[Tensor]) -> Result<(f64, Vec<f64>)> {
    let (mut changed, mut total) = (0.0, 0.0);
    let mut per_tensor = Vec::with_capacity(theta.len());
    for (t, t0) in theta.iter().zip(theta0) {
        let n = scalar(&t.f_ne_tensor(t0)?.f_sum(Kind::Int64)?)?;
        let numel = t.numel() as f64;
        changed += n;
        total += numel;
        per_tensor.push(if numel > 0.0 { n / numel } else { 0.0 });
    }
    Ok((if total > 0.0 { changed / total } else { 0.0 }, per_tensor))
}

/// The loss on `(x, y)` of `theta` after the step Templar's validator takes with `upload`
/// alone: θ − η·eval_lr_factor·sign(IDCT(decompress(dequantize(upload)))).
fn loss_after_upload(
    model: &mut Params,
    theta: &[Tensor],
    upload: &Upload,
    compressor: &mut Compressor,
    step: f64,
    batch: &(Tensor, Tensor),
) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    for ((p, t), ct) in model.tensors.iter_mut().zip(theta).zip(&upload.tensors) {
        let update = compressor.decode_upload(ct)?.f_sign()?.f_mul_scalar(step)?;
        p.f_copy_(&t.f_sub(&update)?)?;
    }
    scalar(&model.loss(&batch.0, &batch.1)?)
}

fn loss_at(model: &mut Params, theta: &[Tensor], batch: &(Tensor, Tensor)) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    for (p, t) in model.tensors.iter_mut().zip(theta) {
        p.f_copy_(t)?;
    }
    scalar(&model.loss(&batch.0, &batch.1)?)
}

/// What the verification needs besides the outputs: the workload, its batches, a model to
/// evaluate losses with, and the compressor.
pub struct Verifier {
    pub config: WorkloadConfig,
    device: Device,
    names: Vec<String>,
    theta0: Vec<Tensor>,
    batches: Vec<(Tensor, Tensor)>,
    model: Params,
    compressor: Compressor,
    /// Templar's loss after applying an upload, by (window, sha256 of the upload file).
    known_after: HashMap<(usize, String), f64>,
}

impl Verifier {
    pub fn new(config: &WorkloadConfig, corpus: &Corpus, device: Device) -> Result<Self> {
        let model = Params::init(&config.model, config.seed, device)?;
        let theta0 = model
            .tensors
            .iter()
            .map(detached_copy)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let names = model.names().map(str::to_string).collect();
        let batches = (0..config.windows)
            .map(|w| {
                corpus
                    .window_page(config.uid, w)
                    .and_then(|p| p.inputs_and_labels(device))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            config: config.clone(),
            device,
            names,
            theta0,
            batches,
            model,
            compressor: Compressor::new(CompressorConfig::from(&config.hparams), device),
            known_after: HashMap::new(),
        })
    }

    fn step(&self) -> f64 {
        self.config.hparams.lr * self.config.hparams.eval_lr_factor
    }

    /// Reads a reference run's outputs (written with θ snapshots) and evaluates its own
    /// uploads with Templar's check.
    pub fn reference(&mut self, dir: &Path, losses: Vec<f64>) -> Result<Reference> {
        let windows = self.config.windows as usize;
        let uploads = read_uploads(dir, windows, self.device)?;
        let weights = read_weights(&dir.join(WEIGHTS_FILE), &self.names, self.device)?;
        let mut thetas = vec![self
            .theta0
            .iter()
            .map(Tensor::shallow_clone)
            .collect::<Vec<_>>()];
        for w in 1..windows {
            thetas.push(read_weights(&theta_path(dir, w), &self.names, self.device)?);
        }
        // The reference's own Templar losses are a function of the cached outputs: computed
        // once, kept beside them.
        let cached = dir.join(TEMPLAR_FILE);
        let templar = match std::fs::read(&cached)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<(f64, f64)>>(&b).ok())
            .filter(|t| t.len() == windows)
        {
            Some(t) => t,
            None => {
                let step = self.step();
                let mut templar = Vec::with_capacity(windows);
                for w in 0..windows {
                    let before = loss_at(&mut self.model, &thetas[w], &self.batches[w])?;
                    let after = loss_after_upload(
                        &mut self.model,
                        &thetas[w],
                        &uploads[w],
                        &mut self.compressor,
                        step,
                        &self.batches[w],
                    )?;
                    templar.push((before, after));
                }
                // A cache that cannot be written costs only time.
                let _ = std::fs::write(&cached, serde_json::to_vec(&templar)?);
                templar
            }
        };
        for (w, (_, after)) in templar.iter().enumerate() {
            self.known_after.insert((w, upload_digest(dir, w)?), *after);
        }
        let (changed_fraction, changed_per_tensor) = changed_fractions(&weights, &self.theta0)?;
        Ok(Reference {
            losses,
            uploads,
            weights,
            thetas,
            templar,
            changed_fraction,
            changed_per_tensor,
        })
    }

    /// Measures one run's outputs in `dir` against `reference`. `losses` and `window_tokens`
    /// come from the run's report.
    pub fn measure(
        &mut self,
        dir: &Path,
        losses: &[f64],
        window_tokens: &[u64],
        reference: &Reference,
    ) -> Result<Measurements> {
        let windows = self.config.windows as usize;
        let mut m = Measurements {
            losses: losses.to_vec(),
            window_tokens: window_tokens.to_vec(),
            ..Measurements::default()
        };
        for (w, l) in losses.iter().enumerate() {
            if !l.is_finite() {
                m.nonfinite.push(format!("window {w}'s loss ({l})"));
            }
        }
        let uploads = read_uploads(dir, windows, self.device)?;
        let weights = read_weights(&dir.join(WEIGHTS_FILE), &self.names, self.device)?;
        for (name, t) in self.names.iter().zip(&weights) {
            if !all_finite(t)? {
                m.nonfinite.push(format!("the final weights of {name}"));
            }
        }
        let step = self.step();
        for (w, (upload, ref_upload)) in uploads.iter().zip(&reference.uploads).enumerate() {
            let mut finite = true;
            for (name, ct) in self.names.iter().zip(&upload.tensors) {
                for (part, t) in [
                    ("shift", &ct.shift),
                    ("scale", &ct.scale),
                    ("lookup", &ct.lookup),
                ] {
                    if !all_finite(t)? {
                        m.nonfinite
                            .push(format!("window {w}'s upload of {name} ({part})"));
                        finite = false;
                    }
                }
            }
            m.overlap.push(self.overlap(upload, ref_upload)?);
            m.value_error.push(self.value_error(upload, ref_upload)?);
            let digest = upload_digest(dir, w)?;
            let after = match self.known_after.get(&(w, digest.clone())) {
                // The same bytes as an upload already evaluated (the reference's, or an
                // earlier run's: a deterministic submission repeats itself) give the same loss.
                Some(&after) => after,
                None if finite => {
                    let after = loss_after_upload(
                        &mut self.model,
                        &reference.thetas[w],
                        upload,
                        &mut self.compressor,
                        step,
                        &self.batches[w],
                    )?;
                    self.known_after.insert((w, digest), after);
                    after
                }
                None => f64::NAN,
            };
            m.templar_after.push(after);
        }
        let (mut num, mut den) = (0.0, 0.0);
        let mut worst = (0.0f64, String::new());
        m.update_cosine = (f64::INFINITY, String::new());
        for (((name, t), r), t0) in self
            .names
            .iter()
            .zip(&weights)
            .zip(&reference.weights)
            .zip(&self.theta0)
        {
            let diff = sum_sq(&t.f_sub(r)?)?;
            let reference_update = r.f_sub(t0)?;
            let update = sum_sq(&reference_update)?;
            num += diff;
            den += update;
            let ratio = relative(diff, update);
            if ratio.is_nan() || ratio > worst.0 {
                worst = (ratio, name.clone());
            }
            // A tensor the reference did not move says nothing about direction.
            if update > 0.0 {
                let own_update = t.f_sub(t0)?;
                let norms = (sum_sq(&own_update)? * update).sqrt();
                let cosine = if norms > 0.0 {
                    dot(&own_update, &reference_update)? / norms
                } else {
                    0.0
                };
                if cosine.is_nan() || cosine < m.update_cosine.0 {
                    m.update_cosine = (cosine, name.clone());
                }
            }
        }
        m.weight_error = relative(num, den);
        m.weight_error_tensor = worst;
        let (changed, per_tensor) = changed_fractions(&weights, &self.theta0)?;
        m.changed_fraction = changed;
        m.changed_tensor = (f64::INFINITY, String::new());
        for ((name, fraction), reference) in self
            .names
            .iter()
            .zip(per_tensor)
            .zip(&reference.changed_per_tensor)
        {
            // A tensor the reference itself left alone says nothing.
            if *reference > 0.0 && fraction / reference < m.changed_tensor.0 {
                m.changed_tensor = (fraction / reference, name.clone());
            }
        }
        Ok(m)
    }

    /// Mean per-chunk top-k overlap over the whole upload, and its worst tensor.
    fn overlap(&self, upload: &Upload, reference: &Upload) -> Result<(f64, String, f64)> {
        let (mut shared, mut slots) = (0.0, 0.0);
        let mut worst = (f64::INFINITY, String::new());
        for ((name, ct), rt) in self
            .names
            .iter()
            .zip(&upload.tensors)
            .zip(&reference.tensors)
        {
            let (chunks, len) = (ct.geometry.chunks(), ct.geometry.chunk_len());
            let mask = |c: &CompressedTensor| -> Result<Tensor> {
                // A mask, not a count: an index repeated within a chunk counts once.
                Ok(Tensor::f_zeros([chunks, len], (Kind::Float, self.device))?
                    .f_scatter_value(1, &c.idx, 1.0)?)
            };
            let common = scalar(&mask(ct)?.f_mul(&mask(rt)?)?.f_sum(Kind::Double)?)?;
            let k = (rt.k() * chunks) as f64;
            shared += common;
            slots += k;
            let mean = if k > 0.0 { common / k } else { 1.0 };
            if mean < worst.0 {
                worst = (mean, name.clone());
            }
        }
        let total = if slots > 0.0 { shared / slots } else { 1.0 };
        Ok((total, worst.1, worst.0))
    }

    /// ‖D − D_ref‖ / ‖D_ref‖ in DCT space over the whole upload, and the worst tensor.
    fn value_error(&self, upload: &Upload, reference: &Upload) -> Result<(f64, String, f64)> {
        let (mut num, mut den) = (0.0, 0.0);
        let mut worst = (0.0f64, String::new());
        for ((name, ct), rt) in self
            .names
            .iter()
            .zip(&upload.tensors)
            .zip(&reference.tensors)
        {
            let dense = |c: &CompressedTensor| -> Result<Tensor> {
                let values = self.compressor.dequantize(c)?;
                Ok(self.compressor.decompress(&c.idx, &values, &c.geometry)?)
            };
            let (d, r) = (dense(ct)?, dense(rt)?);
            let diff = sum_sq(&d.f_sub(&r)?)?;
            let norm = sum_sq(&r)?;
            num += diff;
            den += norm;
            let ratio = relative(diff, norm);
            if ratio.is_nan() || ratio > worst.0 {
                worst = (ratio, name.clone());
            }
        }
        Ok((relative(num, den), worst.1, worst.0))
    }
}

/// √(a / b) for sums of squares; 0 when both are 0, ∞ when only b is.
fn relative(diff_sq: f64, ref_sq: f64) -> f64 {
    if diff_sq == 0.0 {
        0.0
    } else if ref_sq == 0.0 {
        f64::INFINITY
    } else {
        (diff_sq / ref_sq).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::relative;

    #[test]
    fn relative_error_of_sums_of_squares() {
        assert_eq!(relative(0.0, 0.0), 0.0);
        assert_eq!(relative(1.0, 0.0), f64::INFINITY);
        assert_eq!(relative(1.0, 4.0), 0.5);
        assert!(relative(f64::NAN, 1.0).is_nan());
    }
}
