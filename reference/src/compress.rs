//! Templar's DeMo compressor, exactly as WORKLOAD.md specifies it: chunking, a 2-D orthonormal
//! DCT-II per chunk, per-chunk top-k, 256-bin quantisation with a centroid lookup, decompression
//! with mean reduction, and the per-chunk normalised aggregation of several uploads.
//!
//! Everything runs as libtorch ops on the tensors' own device, so CPU and CUDA share one path.
//!
//! Layout. A 2-D tensor `[R, C]` with chunk `h × w` is transformed in place of its row-major
//! layout: the column transform is one GEMM over `[R·C/w, w]`, the row transform a batched
//! GEMM over `[R/h, h, C]`. Only then is it permuted into the chunk layout
//! `[R/h · C/w, h·w]` (row-major index `b·w + d` within a chunk) for top-k. A 1-D tensor `[N]`
//! is `[N/w, w]` and needs no permute. Templar's einsum over the rearranged tensor computes the
//! same values with an extra copy before the transform.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// The largest divisor of `n` that is at most `target`.
pub fn chunk_size(n: i64, target: i64) -> i64 {
    assert!(n > 0 && target > 0, "chunk_size needs positive sizes");
    (1..=target.min(n)).rev().find(|d| n % d == 0).unwrap_or(1)
}

/// The orthonormal DCT-II basis `F[n, k] = s_k·cos(π(2n+1)k / 2N)`, built in f64 and rounded
/// to f32, row-major. The forward transform of a column vector `x` is `Fᵀx`, the inverse `F X`.
pub fn dct_basis(n: i64) -> Vec<f32> {
    let nf = n as f64;
    let mut out = Vec::with_capacity((n * n) as usize);
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
            _ => Err(Error::Shape(format!(
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
            _ => unreachable!("Geometry::new admits 1-D and 2-D shapes only"),
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

/// The compressor's settings (WORKLOAD.md; defaults from `HyperParams`).
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
            return Err(Error::Config(format!(
                "chunk must be from 1 to 256 (indices within a chunk are u16), not {}",
                self.chunk
            )));
        }
        if self.topk < 1 {
            return Err(Error::Config(format!(
                "topk must be at least 1, not {}",
                self.topk
            )));
        }
        if !(2..=256).contains(&self.bins) || self.bins % 2 != 0 {
            return Err(Error::Config(format!(
                "bins must be an even number from 2 to 256 (codes are u8), not {}",
                self.bins
            )));
        }
        if !self.range_sigmas.is_finite() || self.range_sigmas <= 0.0 {
            return Err(Error::Config(format!(
                "the quantisation range must be a positive number of sigmas, not {}",
                self.range_sigmas
            )));
        }
        Ok(())
    }
}

impl From<&crate::config::HyperParams> for CompressorConfig {
    fn from(h: &crate::config::HyperParams) -> Self {
        Self {
            chunk: h.chunk,
            topk: h.topk,
            bins: h.bins,
            range_sigmas: h.quant_range_sigmas,
        }
    }
}

impl Default for CompressorConfig {
    fn default() -> Self {
        (&crate::config::HyperParams::default()).into()
    }
}

/// One tensor's upload: what a miner transmits for it.
#[derive(Debug)]
pub struct CompressedTensor {
    pub geometry: Geometry,
    /// Indices within each chunk, i64 `[chunks, k]`, ascending within a chunk.
    pub idx: Tensor,
    /// Quantisation codes, u8 `[chunks, k]`, aligned with `idx`.
    pub codes: Tensor,
    /// f32 scalars (0-dim tensors on the device, so no host round trip is needed).
    pub shift: Tensor,
    pub scale: Tensor,
    /// f32 `[bins]`: the mean of the centred values that fell in each bin.
    pub lookup: Tensor,
}

impl CompressedTensor {
    pub fn k(&self) -> i64 {
        self.idx.size().last().copied().unwrap_or(0)
    }

    /// Checks that the parts agree with each other and with the geometry, so that decoding an
    /// upload that came from a file cannot index out of range or misalign.
    pub fn validate(&self, name: &str, bins: i64) -> Result<()> {
        let g = &self.geometry;
        let want = [g.chunks(), self.k()];
        let bad = |what: String| Err(Error::Shape(format!("{name}: {what}")));
        if self.idx.size() != want {
            return bad(format!(
                "indices have shape {:?}, expected {:?}",
                self.idx.size(),
                want
            ));
        }
        if self.codes.size() != want {
            return bad(format!(
                "codes have shape {:?}, expected {:?}",
                self.codes.size(),
                want
            ));
        }
        if self.k() < 1 || self.k() > g.chunk_len() {
            return bad(format!(
                "k = {} is outside 1..={} for {}×{} chunks",
                self.k(),
                g.chunk_len(),
                g.h,
                g.w
            ));
        }
        if self.lookup.size() != [bins] {
            return bad(format!(
                "lookup has shape {:?}, expected [{bins}]",
                self.lookup.size()
            ));
        }
        if self.shift.numel() != 1 || self.scale.numel() != 1 {
            return bad("shift and scale must be scalars".into());
        }
        let (lo, hi) = (
            self.idx.f_min()?.f_int64_value(&[])?,
            self.idx.f_max()?.f_int64_value(&[])?,
        );
        if lo < 0 || hi >= g.chunk_len() {
            return bad(format!(
                "indices span {lo}..={hi}, outside the chunk's 0..{}",
                g.chunk_len()
            ));
        }
        let max_code = self.codes.f_max()?.f_int64_value(&[])?;
        if max_code >= bins {
            return bad(format!("code {max_code} is outside the {bins} bins"));
        }
        // Strictly ascending within each chunk, as the contract says: a repeated index would
        // count one coefficient's overlap twice and decode as a sum the compressor never made.
        let k = self.k();
        if k > 1 {
            let (later, earlier) = (
                self.idx.f_narrow(1, 1, k - 1)?,
                self.idx.f_narrow(1, 0, k - 1)?,
            );
            let out_of_order = later.f_le_tensor(&earlier)?;
            let count = out_of_order.f_sum(tch::Kind::Int64)?.f_int64_value(&[])?;
            if count > 0 {
                return bad(format!(
                    "{count} indices are not above the one before them; within a chunk indices must be strictly ascending (unique and sorted)"
                ));
            }
        }
        Ok(())
    }
}

/// The compressor, with its DCT bases cached per size on one device.
pub struct Compressor {
    pub config: CompressorConfig,
    device: Device,
    /// (n, F, Fᵀ) per chunk size n.
    bases: Vec<(i64, Tensor, Tensor)>,
}

impl Compressor {
    pub fn new(config: CompressorConfig, device: Device) -> Self {
        Self {
            config,
            device,
            bases: Vec::new(),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn geometry(&self, shape: &[i64]) -> Result<Geometry> {
        Geometry::new(shape, self.config.chunk)
    }

    fn basis(&mut self, n: i64) -> Result<(Tensor, Tensor)> {
        if let Some((_, f, ft)) = self.bases.iter().find(|(m, _, _)| *m == n) {
            return Ok((f.shallow_clone(), ft.shallow_clone()));
        }
        let f = Tensor::f_from_slice(&dct_basis(n))?
            .f_view([n, n])?
            .f_to_device(self.device)?;
        let ft = f.f_transpose(0, 1)?.f_contiguous()?;
        self.bases.push((n, f.shallow_clone(), ft.shallow_clone()));
        Ok((f, ft))
    }

    /// The DCT coefficients of `x` in chunk layout `[chunks, h·w]`.
    pub fn encode(&mut self, x: &Tensor, g: &Geometry) -> Result<Tensor> {
        let (fw, _) = self.basis(g.w)?;
        let x = x.f_contiguous()?;
        let cols = x.f_view([-1, g.w])?.f_matmul(&fw)?;
        if !g.is_2d() {
            return Ok(cols);
        }
        let (r, c) = (g.shape[0], g.shape[1]);
        let (_, fht) = self.basis(g.h)?;
        Ok(fht
            .f_matmul(&cols.f_view([r / g.h, g.h, c])?)?
            .f_view([r / g.h, g.h, c / g.w, g.w])?
            .f_permute([0, 2, 1, 3])?
            .f_contiguous()?
            .f_view([-1, g.h * g.w])?)
    }

    /// The inverse of [`encode`](Self::encode): chunk-layout coefficients back to `g.shape`.
    pub fn decode(&mut self, coeffs: &Tensor, g: &Geometry) -> Result<Tensor> {
        let (_, fwt) = self.basis(g.w)?;
        if !g.is_2d() {
            return Ok(coeffs
                .f_view([-1, g.w])?
                .f_matmul(&fwt)?
                .f_view(g.shape.as_slice())?);
        }
        let (r, c) = (g.shape[0], g.shape[1]);
        let (fh, _) = self.basis(g.h)?;
        let rows = coeffs
            .f_view([r / g.h, c / g.w, g.h, g.w])?
            .f_permute([0, 2, 1, 3])?
            .f_contiguous()?
            .f_view([r / g.h, g.h, c])?;
        Ok(fh
            .f_matmul(&rows)?
            .f_view([-1, g.w])?
            .f_matmul(&fwt)?
            .f_view([r, c])?)
    }

    /// Compresses one tensor: DCT, per-chunk top-k by magnitude, quantisation.
    pub fn compress(&mut self, x: &Tensor) -> Result<CompressedTensor> {
        let g = self.geometry(&x.size())?;
        let x = x.f_to_kind(Kind::Float)?;
        let coeffs = self.encode(&x, &g)?;
        let k = g.k(self.config.topk);
        let (_, idx) = coeffs.f_abs()?.f_topk(k, -1, true, false)?;
        // Ascending indices make an upload canonical: two correct implementations agree
        // byte for byte instead of up to a permutation.
        let (idx, _) = idx.f_sort(-1, false)?;
        let values = coeffs.f_gather(-1, &idx, false)?;
        let (codes, shift, scale, lookup) = self.quantize(&values)?;
        Ok(CompressedTensor {
            geometry: g,
            idx,
            codes,
            shift,
            scale,
            lookup,
        })
    }

    /// 256-bin quantisation over all of `values` at once (WORKLOAD.md, "Quantization").
    /// Returns (codes u8, shift, scale, lookup).
    pub fn quantize(&self, values: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let bins = self.config.bins;
        let v = values.f_flatten(0, -1)?;
        let n = v.numel() as f64;
        let shift = v.f_mean(Kind::Float)?;
        let centred = v.f_sub(&shift)?;
        let std = centred.f_norm()?.f_div_scalar((n - 1.0).sqrt())?;
        let raw_scale = std.f_mul_scalar(self.config.range_sigmas / bins as f64)?;
        let usable = raw_scale
            .f_isfinite()?
            .f_logical_and(&raw_scale.f_gt(0.0)?)?;
        let scale = raw_scale.f_where_scalarother(&usable, 1.0)?;
        let offset = (bins / 2) as f64;
        let q = centred
            .f_div(&scale)?
            .f_add_scalar(offset)?
            .f_round()?
            .f_clamp(0.0, (bins - 1) as f64)?
            .f_to_kind(Kind::Int64)?;
        let opts = (Kind::Float, values.device());
        let sums = Tensor::f_zeros([bins], opts)?.f_scatter_add(0, &q, &centred)?;
        let counts =
            Tensor::f_zeros([bins], opts)?.f_scatter_add(0, &q, &Tensor::f_ones_like(&centred)?)?;
        let lookup = sums.f_div(&counts.f_clamp_min(1.0)?)?;
        let codes = q.f_to_kind(Kind::Uint8)?.f_view(values.size().as_slice())?;
        Ok((codes, shift, scale, lookup))
    }

    /// `lookup[q] + shift`, shaped like `codes`.
    pub fn dequantize(&self, ct: &CompressedTensor) -> Result<Tensor> {
        let flat = ct.codes.f_to_kind(Kind::Int64)?.f_flatten(0, -1)?;
        Ok(ct
            .lookup
            .f_index_select(0, &flat)?
            .f_view(ct.codes.size().as_slice())?
            .f_add(&ct.shift)?)
    }

    /// A zero `[chunks, h·w]` coefficient tensor with each value scattered to its index; where
    /// several values hit one index, their mean.
    pub fn decompress(&self, idx: &Tensor, values: &Tensor, g: &Geometry) -> Result<Tensor> {
        let opts = (Kind::Float, values.device());
        let shape = [g.chunks(), g.chunk_len()];
        let sums = Tensor::f_zeros(shape, opts)?.f_scatter_add(1, idx, values)?;
        let counts =
            Tensor::f_zeros(shape, opts)?.f_scatter_add(1, idx, &Tensor::f_ones_like(values)?)?;
        Ok(sums.f_div(&counts.f_clamp_min(1.0)?)?)
    }

    /// What an upload transmits, back in weight space: IDCT(decompress(idx, dequantize)).
    pub fn decode_upload(&mut self, ct: &CompressedTensor) -> Result<Tensor> {
        let values = self.dequantize(ct)?;
        let coeffs = self.decompress(&ct.idx, &values, &ct.geometry)?;
        self.decode(&coeffs, &ct.geometry)
    }

    /// The aggregate of several uploads of one tensor (own first, then peers), in weight space:
    /// each source's dequantised values divided by their per-chunk L2 norm (+1e-8), all
    /// sources' (index, value) pairs decompressed together with mean reduction, then the IDCT.
    pub fn aggregate(&mut self, sources: &[&CompressedTensor]) -> Result<Tensor> {
        let first = sources
            .first()
            .ok_or_else(|| Error::Shape("nothing to aggregate".into()))?;
        let g = first.geometry.clone();
        let mut idx = Vec::with_capacity(sources.len());
        let mut values = Vec::with_capacity(sources.len());
        for (i, s) in sources.iter().enumerate() {
            if s.geometry != g {
                return Err(Error::Shape(format!(
                    "upload {i} has shape {:?} (chunks {}×{}), but the first has {:?} (chunks {}×{})",
                    s.geometry.shape, s.geometry.h, s.geometry.w, g.shape, g.h, g.w
                )));
            }
            let v = self.dequantize(s)?;
            let norm = v.f_norm_scalaropt_dim(2, [-1], true)?.f_add_scalar(1e-8)?;
            values.push(v.f_div(&norm)?);
            idx.push(s.idx.shallow_clone());
        }
        let idx = Tensor::f_cat(&idx, 1)?;
        let values = Tensor::f_cat(&values, 1)?;
        let coeffs = self.decompress(&idx, &values, &g)?;
        self.decode(&coeffs, &g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> Compressor {
        Compressor::new(CompressorConfig::default(), Device::Cpu)
    }

    fn randn(shape: &[i64], seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        a.f_sub(b).unwrap().abs().max().double_value(&[])
    }

    #[test]
    fn chunk_sizes_follow_the_rule() {
        assert_eq!(chunk_size(64, 8), 8);
        assert_eq!(chunk_size(64, 7), 4);
        assert_eq!(chunk_size(64, 100), 64);
        assert_eq!(chunk_size(100, 16), 10);
        assert_eq!(chunk_size(1408, 64), 64);
        assert_eq!(chunk_size(1000, 64), 50);
        assert_eq!(chunk_size(97, 64), 1);
    }

    #[test]
    fn dct_basis_is_orthonormal() {
        for n in [1, 2, 7, 44, 64] {
            let f = Tensor::from_slice(&dct_basis(n))
                .view([n, n])
                .to_kind(Kind::Double);
            let eye = Tensor::eye(n, (Kind::Double, Device::Cpu));
            assert!(
                max_abs_diff(&f.tr().matmul(&f), &eye) < 1e-6,
                "FᵀF ≠ I for n = {n}"
            );
            assert!(
                max_abs_diff(&f.matmul(&f.tr()), &eye) < 1e-6,
                "FFᵀ ≠ I for n = {n}"
            );
        }
    }

    #[test]
    fn dct_matches_the_definition_on_one_chunk() {
        // A 2-D tensor that is exactly one 4×8 chunk: encode must equal Fᵀ X F.
        let mut c = Compressor::new(
            CompressorConfig {
                chunk: 8,
                ..Default::default()
            },
            Device::Cpu,
        );
        let x = randn(&[4, 8], 1);
        let g = c.geometry(&[4, 8]).unwrap();
        let fh = Tensor::from_slice(&dct_basis(4)).view([4, 4]);
        let fw = Tensor::from_slice(&dct_basis(8)).view([8, 8]);
        let want = fh.tr().matmul(&x).matmul(&fw).view([1, 32]);
        assert!(max_abs_diff(&c.encode(&x, &g).unwrap(), &want) < 1e-5);
    }

    #[test]
    fn decode_inverts_encode() {
        let mut c = cpu();
        for shape in [
            vec![128, 384],
            vec![384, 128],
            vec![100, 30],
            vec![64],
            vec![1408],
            vec![7, 5],
        ] {
            let x = randn(&shape, 2);
            let g = c.geometry(&shape).unwrap();
            let coeffs = c.encode(&x, &g).unwrap();
            let back = c.decode(&coeffs, &g).unwrap();
            // f32 arithmetic: the round trip is exact to 1e-6 relative to the input's scale.
            let rel = back.f_sub(&x).unwrap().norm().double_value(&[]) / x.norm().double_value(&[]);
            let worst = max_abs_diff(&back, &x) / x.abs().max().double_value(&[]);
            assert!(
                rel < 1e-6 && worst < 1e-6,
                "shape {shape:?}: rms {rel:e}, worst {worst:e}"
            );
        }
    }

    #[test]
    fn quantisation_worked_example() {
        let c = cpu();
        let v = Tensor::from_slice(&[-3.0f32, -1.0, 1.0, 3.0]).view([1, 4]);
        let (codes, shift, scale, lookup) = c.quantize(&v).unwrap();
        assert_eq!(
            Vec::<u8>::try_from(&codes.flatten(0, -1)).unwrap(),
            vec![78, 111, 145, 178]
        );
        assert_eq!(shift.double_value(&[]), 0.0);
        let want_scale = 6.0 * (20.0f64 / 3.0).sqrt() / 256.0;
        assert!((scale.double_value(&[]) - want_scale).abs() < 1e-7);
        let ct = CompressedTensor {
            geometry: Geometry::new(&[4], 64).unwrap(),
            idx: Tensor::from_slice(&[0i64, 1, 2, 3]).view([1, 4]),
            codes,
            shift,
            scale,
            lookup,
        };
        let back = c.dequantize(&ct).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&back.flatten(0, -1)).unwrap(),
            vec![-3.0, -1.0, 1.0, 3.0]
        );
    }

    #[test]
    fn degenerate_scale_falls_back_to_one() {
        let c = cpu();
        let (codes, _, scale, _) = c
            .quantize(&Tensor::from_slice(&[2.5f32, 2.5, 2.5]))
            .unwrap();
        assert_eq!(scale.double_value(&[]), 1.0);
        assert_eq!(Vec::<u8>::try_from(&codes).unwrap(), vec![128, 128, 128]);
        let (_, _, scale, _) = c.quantize(&Tensor::from_slice(&[4.0f32])).unwrap();
        assert_eq!(scale.double_value(&[]), 1.0, "n = 1 divides by zero");
    }

    #[test]
    fn topk_keeps_the_largest_coefficients_in_ascending_order() {
        let mut c = Compressor::new(
            CompressorConfig {
                topk: 3,
                ..Default::default()
            },
            Device::Cpu,
        );
        // A 1-D tensor whose DCT we control: build coefficients, decode them, compress.
        let g = c.geometry(&[8]).unwrap();
        let coeffs =
            Tensor::from_slice(&[0.1f32, -5.0, 0.2, 4.0, 0.0, -0.3, 3.0, 0.05]).view([1, 8]);
        let x = c.decode(&coeffs, &g).unwrap();
        let ct = c.compress(&x).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(&ct.idx.flatten(0, -1)).unwrap(),
            vec![1, 3, 6]
        );
        let v = c.dequantize(&ct).unwrap();
        let v = Vec::<f32>::try_from(&v.flatten(0, -1)).unwrap();
        for (got, want) in v.iter().zip([-5.0f32, 4.0, 3.0]) {
            assert!((got - want).abs() < 1e-5, "{v:?}");
        }
    }

    #[test]
    fn decompress_takes_the_mean_of_collisions() {
        let c = cpu();
        let g = Geometry::new(&[4], 64).unwrap();
        let idx = Tensor::from_slice(&[1i64, 1, 3]).view([1, 3]);
        let vals = Tensor::from_slice(&[2.0f32, 4.0, -1.0]).view([1, 3]);
        let out = c.decompress(&idx, &vals, &g).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&out.flatten(0, -1)).unwrap(),
            vec![0.0, 3.0, 0.0, -1.0]
        );
    }

    #[test]
    fn aggregate_of_one_upload_rescales_each_chunk_positively() {
        let mut c = cpu();
        let x = randn(&[128, 64], 3);
        let ct = c.compress(&x).unwrap();
        let g = ct.geometry.clone();
        let aggregate = c.aggregate(&[&ct]).unwrap();
        let decoded = c.decode_upload(&ct).unwrap();
        let a = c.encode(&aggregate, &g).unwrap();
        let d = c.encode(&decoded, &g).unwrap();
        // One source: each chunk is the decoded chunk divided by its norm, so per chunk the two
        // point the same way and the aggregate has unit norm.
        let dot = a.f_mul(&d).unwrap().sum_dim_intlist(-1, false, Kind::Float);
        let (na, nd) = (
            a.norm_scalaropt_dim(2, [-1], false),
            d.norm_scalaropt_dim(2, [-1], false),
        );
        assert!((dot / (&na * &nd)).min().double_value(&[]) > 0.9999);
        assert!(max_abs_diff(&na, &Tensor::ones_like(&na)) < 1e-5);
    }

    #[test]
    fn aggregate_refuses_mismatched_shapes() {
        let mut c = cpu();
        let a = c.compress(&randn(&[64, 64], 4)).unwrap();
        let b = c.compress(&randn(&[64, 128], 5)).unwrap();
        let e = c.aggregate(&[&a, &b]).unwrap_err().to_string();
        assert!(e.contains("[64, 128]") && e.contains("[64, 64]"), "{e}");
    }

    #[test]
    fn validate_catches_out_of_range_indices() {
        let mut c = cpu();
        let mut ct = c.compress(&randn(&[64], 6)).unwrap();
        ct.validate("t", 256).unwrap();
        ct.idx = ct.idx.f_add_scalar(40).unwrap();
        let e = ct.validate("t", 256).unwrap_err().to_string();
        assert!(e.contains("outside the chunk"), "{e}");
    }

    #[test]
    fn validate_requires_unique_ascending_indices_within_a_chunk() {
        let mut c = cpu();
        let honest = c.compress(&randn(&[64, 64], 7)).unwrap();
        honest.validate("t", 256).unwrap();
        assert!(honest.k() > 1);
        let copy = |ct: &CompressedTensor| CompressedTensor {
            geometry: ct.geometry.clone(),
            idx: ct.idx.copy(),
            codes: ct.codes.copy(),
            shift: ct.shift.copy(),
            scale: ct.scale.copy(),
            lookup: ct.lookup.copy(),
        };
        // The second index of every chunk repeats the first.
        let dup = copy(&honest);
        let first = dup.idx.f_narrow(1, 0, 1).unwrap();
        dup.idx.f_narrow(1, 1, 1).unwrap().f_copy_(&first).unwrap();
        let e = dup.validate("t", 256).unwrap_err().to_string();
        assert!(e.contains("strictly ascending"), "{e}");
        // Descending order, every index still unique and in range.
        let mut flipped = copy(&honest);
        flipped.idx = flipped.idx.f_flip([1]).unwrap();
        assert!(flipped.validate("t", 256).is_err());
    }
}
