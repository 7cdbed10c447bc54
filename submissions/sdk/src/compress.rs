//! Templar's DeMo compressor (WORKLOAD.md, "Compression" and "Aggregation") as ordinary code
//! over registry ops: chunking, a 2-D orthonormal DCT-II per chunk, per-chunk top-k, 256-bin
//! quantisation with a centroid lookup, decompression with mean reduction, and the per-chunk
//! normalised aggregation of several uploads.
//!
//! It issues the same ops, in the same order and with the same arguments, as the native
//! reference (`reference/src/compress.rs`), so on the same device its uploads and decoded
//! tensors are bit-identical to the reference's.
//!
//! Layout. A 2-D tensor `[R, C]` with chunk `h × w` is transformed in its row-major layout: the
//! column transform is one GEMM over `[R·C/w, w]`, the row transform a batched GEMM over
//! `[R/h, h, C]`; only then is it permuted into the chunk layout `[R/h · C/w, h·w]` (row-major
//! index `b·w + d` within a chunk). A 1-D tensor `[N]` is `[N/w, w]`.

use crate::workload::{HyperParams, Upload};
use crate::{Dtype, Error, Result, Tensor};

/// The largest divisor of `n` that is at most `target` (1 when either is not positive).
pub fn chunk_size(n: i64, target: i64) -> i64 {
    if n <= 0 || target <= 0 {
        return 1;
    }
    (1..=target.min(n)).rev().find(|d| n % d == 0).unwrap_or(1)
}

/// The orthonormal DCT-II basis `F[n, k] = s_k·cos(π(2n+1)k / 2N)`, built in f64 and rounded to
/// f32, row-major `[n, n]`. The forward transform of a column vector `x` is `Fᵀx`, the inverse
/// `F X`.
pub fn dct_basis(n: i64) -> Vec<f32> {
    let nf = n as f64;
    let mut out = Vec::with_capacity((n.max(0) * n.max(0)) as usize);
    for i in 0..n {
        for k in 0..n {
            let s = if k == 0 {
                (1.0 / nf).sqrt()
            } else {
                (2.0 / nf).sqrt()
            };
            let angle = std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2.0 * nf);
            out.push((s * angle.cos()) as f32);
        }
    }
    out
}

/// How one tensor is cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub shape: Vec<i64>,
    /// Chunk height (1 for a 1-D tensor) and width.
    pub h: i64,
    pub w: i64,
}

impl Geometry {
    pub fn new(shape: &[i64], target: i64) -> Result<Self> {
        match *shape {
            [n] if n > 0 => Ok(Self {
                shape: shape.to_vec(),
                h: 1,
                w: chunk_size(n, target),
            }),
            [r, c] if r > 0 && c > 0 => Ok(Self {
                shape: shape.to_vec(),
                h: chunk_size(r, target),
                w: chunk_size(c, target),
            }),
            _ => Err(Error::guest(format!(
                "the compressor takes non-empty 1-D or 2-D tensors, not shape {shape:?}"
            ))),
        }
    }

    pub fn is_2d(&self) -> bool {
        self.shape.len() == 2
    }

    pub fn chunk_len(&self) -> i64 {
        self.h * self.w
    }

    /// The chunk grid: `[R/h, C/w]` or `[N/w]`.
    pub fn grid(&self) -> Vec<i64> {
        match *self.shape {
            [n] => vec![n / self.w],
            [r, c] => vec![r / self.h, c / self.w],
            _ => Vec::new(),
        }
    }

    pub fn chunks(&self) -> i64 {
        self.grid().iter().product()
    }

    /// Coefficients kept per chunk.
    pub fn k(&self, topk: i64) -> i64 {
        topk.min(self.chunk_len())
    }
}

/// The compressor's settings (WORKLOAD.md; from [`HyperParams`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompressorConfig {
    pub chunk: i64,
    pub topk: i64,
    pub bins: i64,
    pub range_sigmas: f64,
}

impl CompressorConfig {
    /// Refuses settings the wire format cannot carry: indices are u16 within a chunk, codes u8.
    pub fn validate(&self) -> Result<()> {
        if self.chunk < 1 || self.chunk > 256 {
            return Err(Error::guest(format!(
                "chunk must be from 1 to 256, not {}",
                self.chunk
            )));
        }
        if self.topk < 1 {
            return Err(Error::guest(format!(
                "topk must be at least 1, not {}",
                self.topk
            )));
        }
        if !(2..=256).contains(&self.bins) || self.bins % 2 != 0 {
            return Err(Error::guest(format!(
                "bins must be an even number from 2 to 256, not {}",
                self.bins
            )));
        }
        if !self.range_sigmas.is_finite() || self.range_sigmas <= 0.0 {
            return Err(Error::guest(format!(
                "the quantisation range must be a positive number of sigmas, not {}",
                self.range_sigmas
            )));
        }
        Ok(())
    }
}

impl From<&HyperParams> for CompressorConfig {
    fn from(h: &HyperParams) -> Self {
        Self {
            chunk: h.chunk as i64,
            topk: h.topk as i64,
            bins: h.bins as i64,
            range_sigmas: h.range_sigmas,
        }
    }
}

/// The compressor, with its DCT bases cached per chunk size.
pub struct Compressor {
    pub config: CompressorConfig,
    /// (n, F, Fᵀ) per chunk size n.
    bases: Vec<(i64, Tensor, Tensor)>,
}

impl Compressor {
    pub fn new(config: CompressorConfig) -> Self {
        Self {
            config,
            bases: Vec::new(),
        }
    }

    pub fn geometry(&self, shape: &[i64]) -> Result<Geometry> {
        Geometry::new(shape, self.config.chunk)
    }

    /// Makes sure the basis of size `n` is on the host.
    fn ensure_basis(&mut self, n: i64) -> Result<()> {
        if self.bases.iter().any(|(m, _, _)| *m == n) {
            return Ok(());
        }
        let f = Tensor::from_f32(&dct_basis(n), &[n, n])?;
        let ft = f.transpose(0, 1)?.contiguous()?;
        self.bases.push((n, f, ft));
        Ok(())
    }

    /// (F, Fᵀ) of size `n`, which [`ensure_basis`](Self::ensure_basis) has made.
    fn basis(&self, n: i64) -> Result<(&Tensor, &Tensor)> {
        self.bases
            .iter()
            .find(|(m, _, _)| *m == n)
            .map(|(_, f, ft)| (f, ft))
            .ok_or_else(|| Error::guest(format!("no DCT basis of size {n}")))
    }

    /// The DCT coefficients of `x` (shaped `g.shape`) in chunk layout `[chunks, h·w]`.
    pub fn encode(&mut self, x: &Tensor, g: &Geometry) -> Result<Tensor> {
        self.ensure_basis(g.w)?;
        let (fw, _) = self.basis(g.w)?;
        let x = x.contiguous()?;
        let cols = x.view(&[-1, g.w])?.matmul(fw)?;
        if !g.is_2d() {
            return Ok(cols);
        }
        let (r, c) = (g.shape[0], g.shape[1]);
        self.ensure_basis(g.h)?;
        let (_, fht) = self.basis(g.h)?;
        fht.matmul(&cols.view(&[r / g.h, g.h, c])?)?
            .view(&[r / g.h, g.h, c / g.w, g.w])?
            .permute(&[0, 2, 1, 3])?
            .contiguous()?
            .view(&[-1, g.h * g.w])
    }

    /// The inverse of [`encode`](Self::encode): chunk-layout coefficients back to `g.shape`.
    pub fn decode(&mut self, coeffs: &Tensor, g: &Geometry) -> Result<Tensor> {
        self.ensure_basis(g.w)?;
        if !g.is_2d() {
            let (_, fwt) = self.basis(g.w)?;
            return coeffs.view(&[-1, g.w])?.matmul(fwt)?.view(&g.shape);
        }
        let (r, c) = (g.shape[0], g.shape[1]);
        self.ensure_basis(g.h)?;
        let (_, fwt) = self.basis(g.w)?;
        let (fh, _) = self.basis(g.h)?;
        let rows = coeffs
            .view(&[r / g.h, c / g.w, g.h, g.w])?
            .permute(&[0, 2, 1, 3])?
            .contiguous()?
            .view(&[r / g.h, g.h, c])?;
        fh.matmul(&rows)?
            .view(&[-1, g.w])?
            .matmul(fwt)?
            .view(&[r, c])
    }

    /// Compresses `x` (shaped `g.shape`): DCT, per-chunk top-k by magnitude with ascending
    /// indices, quantisation.
    pub fn compress(&mut self, x: &Tensor, g: &Geometry) -> Result<Upload> {
        let x = x.to_dtype(Dtype::F32)?;
        let coeffs = self.encode(&x, g)?;
        let k = g.k(self.config.topk);
        let (_, idx) = coeffs.abs()?.topk(k, -1, true, false)?;
        // Ascending indices make an upload canonical.
        let (idx, _) = idx.sort(-1, false)?;
        let values = coeffs.gather(-1, &idx)?;
        let (codes, shift, scale, lookup) = self.quantize(&values)?;
        Ok(Upload {
            idx,
            codes,
            shift,
            scale,
            lookup,
        })
    }

    /// Like [`compress`](Self::compress), with the geometry read from `x`'s shape.
    pub fn compress_tensor(&mut self, x: &Tensor) -> Result<(Upload, Geometry)> {
        let g = self.geometry(&x.shape())?;
        Ok((self.compress(x, &g)?, g))
    }

    /// Quantisation over all of `values` at once (WORKLOAD.md, "Quantization").
    /// Returns (codes u8 shaped like `values`, shift, scale, lookup).
    pub fn quantize(&self, values: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let bins = self.config.bins;
        let shape = values.shape();
        let v = values.flatten(0, -1)?;
        let n = shape.iter().product::<i64>() as f64;
        let shift = v.mean(Some(Dtype::F32))?;
        let centred = v.sub(&shift)?;
        let std = centred.norm()?.div((n - 1.0).sqrt())?;
        let raw_scale = std.mul(self.config.range_sigmas / bins as f64)?;
        let usable = raw_scale.isfinite()?.logical_and(&raw_scale.gt(0.0)?)?;
        let scale = raw_scale.where_self(&usable, 1.0)?;
        let offset = (bins / 2) as f64;
        let q = centred
            .div(&scale)?
            .add(offset)?
            .round()?
            .clamp(Some(0.0), Some((bins - 1) as f64))?
            .to_dtype(Dtype::I64)?;
        let sums = Tensor::zeros(&[bins], Dtype::F32)?.scatter_add(0, &q, &centred)?;
        let counts =
            Tensor::zeros(&[bins], Dtype::F32)?.scatter_add(0, &q, &centred.ones_like()?)?;
        let lookup = sums.div(&counts.clamp_min(1.0)?)?;
        let codes = q.to_dtype(Dtype::U8)?.view(&shape)?;
        Ok((codes, shift, scale, lookup))
    }

    /// `lookup[q] + shift`, shaped like the codes.
    pub fn dequantize(&self, u: &Upload) -> Result<Tensor> {
        let flat = u.codes.to_dtype(Dtype::I64)?.flatten(0, -1)?;
        u.lookup
            .index_select(0, &flat)?
            .view(&u.codes.shape())?
            .add(&u.shift)
    }

    /// A zero `[chunks, h·w]` coefficient tensor with each value scattered to its index; where
    /// several values hit one index, their mean.
    pub fn decompress(&self, idx: &Tensor, values: &Tensor, g: &Geometry) -> Result<Tensor> {
        let shape = [g.chunks(), g.chunk_len()];
        let sums = Tensor::zeros(&shape, Dtype::F32)?.scatter_add(1, idx, values)?;
        let counts =
            Tensor::zeros(&shape, Dtype::F32)?.scatter_add(1, idx, &values.ones_like()?)?;
        sums.div(&counts.clamp_min(1.0)?)
    }

    /// What an upload transmits, back in weight space: IDCT(decompress(idx, dequantize)).
    pub fn decode_upload(&mut self, u: &Upload, g: &Geometry) -> Result<Tensor> {
        let values = self.dequantize(u)?;
        let coeffs = self.decompress(&u.idx, &values, g)?;
        self.decode(&coeffs, g)
    }

    /// The aggregate of several uploads of one tensor (own first, then peers), in weight space:
    /// each source's dequantised values divided by their per-chunk L2 norm (+1e-8), all
    /// sources' (index, value) pairs decompressed together with mean reduction, then the IDCT.
    pub fn aggregate(&mut self, g: &Geometry, sources: &[&Upload]) -> Result<Tensor> {
        if sources.is_empty() {
            return Err(Error::guest("nothing to aggregate"));
        }
        let mut values = Vec::with_capacity(sources.len());
        for s in sources {
            let v = self.dequantize(s)?;
            let norm = v.norm_dims(2.0, &[-1], true)?.add(1e-8)?;
            values.push(v.div(&norm)?);
        }
        let idx: Vec<&Tensor> = sources.iter().map(|s| &s.idx).collect();
        let idx = Tensor::cat(&idx, 1)?;
        let values: Vec<&Tensor> = values.iter().collect();
        let values = Tensor::cat(&values, 1)?;
        let coeffs = self.decompress(&idx, &values, g)?;
        self.decode(&coeffs, g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_follow_the_rule() {
        assert_eq!(chunk_size(64, 8), 8);
        assert_eq!(chunk_size(64, 7), 4);
        assert_eq!(chunk_size(64, 100), 64);
        assert_eq!(chunk_size(100, 16), 10);
        assert_eq!(chunk_size(1408, 64), 64);
        assert_eq!(chunk_size(1000, 64), 50);
        assert_eq!(chunk_size(97, 64), 1);
        assert_eq!(chunk_size(0, 64), 1);
        assert_eq!(chunk_size(64, 0), 1);
    }

    #[test]
    fn dct_basis_is_orthonormal() {
        for n in [1i64, 2, 7, 44, 64] {
            let f: Vec<f64> = dct_basis(n).iter().map(|v| *v as f64).collect();
            let n = n as usize;
            for a in 0..n {
                for b in 0..n {
                    // (FᵀF)[a, b] and (FFᵀ)[a, b].
                    let ftf: f64 = (0..n).map(|i| f[i * n + a] * f[i * n + b]).sum();
                    let fft: f64 = (0..n).map(|i| f[a * n + i] * f[b * n + i]).sum();
                    let eye = if a == b { 1.0 } else { 0.0 };
                    assert!((ftf - eye).abs() < 1e-6, "FᵀF ≠ I for n = {n}");
                    assert!((fft - eye).abs() < 1e-6, "FFᵀ ≠ I for n = {n}");
                }
            }
        }
    }

    #[test]
    fn dct_basis_matches_the_definition() {
        let f = dct_basis(4);
        assert_eq!(f[0], 0.5);
        // F[n=1, k=2] = √(2/4)·cos(π·3·2/8)
        let want = (0.5f64).sqrt() * (std::f64::consts::PI * 6.0 / 8.0).cos();
        assert_eq!(f[4 + 2], want as f32);
    }

    #[test]
    fn geometry_of_the_presets() {
        let g = Geometry::new(&[1408, 512], 64).unwrap();
        assert_eq!(
            (g.h, g.w, g.chunks(), g.chunk_len(), g.k(32)),
            (64, 64, 22 * 8, 4096, 32)
        );
        let g = Geometry::new(&[128], 64).unwrap();
        assert_eq!((g.h, g.w, g.grid(), g.k(32)), (1, 64, vec![2], 32));
        let g = Geometry::new(&[7, 5], 64).unwrap();
        assert_eq!((g.h, g.w, g.chunks(), g.k(32)), (7, 5, 1, 32));
        let g = Geometry::new(&[4], 64).unwrap();
        assert_eq!(g.k(32), 4);
        assert!(Geometry::new(&[2, 3, 4], 64).is_err());
        assert!(Geometry::new(&[0], 64).is_err());
        assert!(Geometry::new(&[], 64).is_err());
    }

    #[test]
    fn config_validation() {
        let ok = CompressorConfig {
            chunk: 64,
            topk: 32,
            bins: 256,
            range_sigmas: 6.0,
        };
        ok.validate().unwrap();
        assert!(CompressorConfig { bins: 255, ..ok }.validate().is_err());
        assert!(CompressorConfig { chunk: 0, ..ok }.validate().is_err());
        assert!(CompressorConfig { topk: 0, ..ok }.validate().is_err());
        assert!(CompressorConfig {
            range_sigmas: f64::NAN,
            ..ok
        }
        .validate()
        .is_err());
    }
}
