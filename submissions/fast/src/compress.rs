//! The DeMo compressor (WORKLOAD.md, "One window", "Compression", "Aggregation") batched over
//! every tensor of a chunk geometry: the same f32 math as the reference, in a few hundred host
//! calls per window instead of ~9,000 (`small`).
//!
//! One [`BucketState`] per [`Bucket`](crate::plan::Bucket) (on every preset: all matrices in
//! one, all vectors in another) holds the bucket's chunks stacked as `[chunks, h, w]`, in
//! parameter order. Per window:
//!
//! 1. **Stage.** Each gradient is copied once into the bucket's staging buffer in chunk layout
//!    (`[R/h, h, C/w, w]` permuted to `[R/h, C/w, h, w]`), bf16 → f32 in the same pass.
//! 2. **Momentum, in DCT space.** The DCT is linear and orthonormal, so `DCT(β·m + η·g) =
//!    β·DCT(m) + η·DCT(g)` and `DCT(m − IDCT(D)) = DCT(m) − D`. The bucket keeps
//!    `M = DCT(m)` instead of `m`: each window costs one forward DCT (of the gradient) instead
//!    of the reference's DCT of m plus IDCT of the transmitted part, and the error feedback is
//!    a sparse `scatter_add_` of the dequantised values instead of a dense IDCT and subtraction.
//!    With an f32 forward/backward (feature `f32-train`) the uploads match the reference's to
//!    2e-7 and the final weights bit for bit.
//! 3. **DCT**, two GEMMs (`[n·h, w] @ F_w`, then `F_hᵀ @ [n, h, w]`) per slice of 1M elements
//!    ([`plan::slices`]), each slice's momentum update and `|M|` done while it is in cache.
//!    Whole-bucket GEMMs would allocate 128 MB outputs (on `small`), whose page faults cost
//!    more than the GEMMs; every other bucket-sized tensor is a persistent buffer updated in
//!    place.
//! 4. **Top-k.** One `topk` over every chunk (`[chunks, h·w]`, k by |value|), one `sort` of the
//!    indices, one `gather`.
//! 5. **Quantisation per tensor, batched.** Shift, σ and each 256-bin lookup are segmented sums
//!    (`scatter_add` keyed by each value's tensor) over the whole bucket, then broadcast back
//!    with `index_select`: the same per-tensor formulas as the reference, in ~20 calls.
//! 6. **Aggregation.** The own and the peers' values for the whole bucket are dequantised,
//!    normalised per chunk and source, and decompressed with mean reduction in one
//!    `scatter_add_` pair, then the IDCT and `η·sign` per slice, and per tensor the weight
//!    decay and the sign step applied through a chunk-layout view of θ.

use crusades_sdk::compress::dct_basis;
use crusades_sdk::workload::Upload;
use crusades_sdk::{Dtype, Result, Tensor};

use crate::plan::{self, Bucket};

/// The compressor's hyper-parameters (WORKLOAD.md).
#[derive(Debug, Clone, Copy)]
pub struct Hyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum_decay: f64,
    pub bins: i64,
    pub range_sigmas: f64,
}

/// DCT bases of one size: F and Fᵀ.
struct Basis {
    f: Tensor,
    ft: Tensor,
}

impl Basis {
    fn new(n: i64) -> Result<Self> {
        let f = Tensor::from_f32(&dct_basis(n), &[n, n])?;
        let ft = f.transpose(0, 1)?.contiguous()?;
        Ok(Self { f, ft })
    }
}

/// The selected coefficients of a bucket and their quantisation, all in bucket layout.
pub struct Encoded {
    /// i64 `[chunks, k]`, ascending within a chunk.
    pub idx: Tensor,
    /// u8 `[chunks, k]`.
    pub codes: Tensor,
    /// f32 `[members]`.
    pub shift: Tensor,
    /// f32 `[members]`.
    pub scale: Tensor,
    /// f32 `[members, bins]`.
    pub lookup: Tensor,
    /// The dequantised values, f32 `[chunks, k]`: what the upload transmits.
    pub values: Tensor,
}

/// One bucket's state and constants.
pub struct BucketState {
    pub plan: Bucket,
    bases_w: Basis,
    /// None when h = 1 (the 1-point DCT is the identity).
    bases_h: Option<Basis>,
    /// DCT(m), `[chunks, h, w]` f32.
    momentum: Tensor,
    /// The gradients in chunk layout, `[chunks, h, w]` f32, rewritten every window.
    staging: Tensor,
    /// Per member, its slice of `staging` in the member's chunked shape (persistent views).
    staging_views: Vec<Tensor>,
    /// Per member, θ viewed `[R/h, h, C/w, w]` (θ itself for a vector): a permuted chunk-layout
    /// update applies to it in place.
    theta_views: Vec<Tensor>,
    /// i64 `[chunks·k]`: each selected value's member.
    seg: Tensor,
    /// i64 `[chunks·k]`: `seg · bins`, the first bin of each value's lookup.
    seg_bins: Tensor,
    /// f32 `[members]`: values per member, and √(values − 1).
    counts: Tensor,
    sqrt_nm1: Tensor,
    /// f32 `[chunks·k]` of ones: the lookup's bin counts.
    ones: Tensor,
    /// For `sources − 1` peers: i64 `[peers·chunks·k]` segment ids of the stacked peers and
    /// their first bins, and f32 ones `[chunks, sources·k]` for the aggregation's counts.
    peer_tables: Option<(usize, Tensor, Tensor, Tensor)>,
    /// The aggregation's dense sums, `[chunks, h·w]` f32, reused every window (the counts use
    /// the staging buffer).
    dense: Option<Tensor>,
    /// Per slice of the bucket ([`plan::slices`]): (staging, momentum) views `[n, h, w]`.
    slice_views: Vec<(Tensor, Tensor)>,
    /// Per slice: `[n, h, w]` views of `dense`, made with it.
    dense_slices: Vec<Tensor>,
}

impl BucketState {
    /// `params` are the host-owned θ in parameter order; call under no-grad (the θ views must
    /// not join the autograd graph).
    pub fn new(plan: Bucket, params: &[Tensor], bins: i64) -> Result<Self> {
        let (n, h, w) = (plan.chunks, plan.h, plan.w);
        let bases_w = Basis::new(w)?;
        let bases_h = if h > 1 { Some(Basis::new(h)?) } else { None };
        let momentum = Tensor::zeros(&[n, h, w], Dtype::F32)?;
        let staging = Tensor::zeros(&[n, h, w], Dtype::F32)?;
        let mut staging_views = Vec::with_capacity(plan.members.len());
        let mut theta_views = Vec::with_capacity(plan.members.len());
        for m in &plan.members {
            staging_views.push(
                staging
                    .narrow(0, m.offset, m.chunks)?
                    .view(&m.chunked_shape(h, w))?,
            );
            let theta = &params[m.param];
            theta_views.push(match m.blocked_shape(h, w) {
                Some(s) => theta.view(&s)?,
                None => theta.view(&m.shape)?,
            });
        }
        let seg_ids = plan.segment_ids();
        let seg = Tensor::from_i64(&seg_ids, &[plan.values()])?;
        let seg_bins_ids: Vec<i64> = seg_ids.iter().map(|s| s * bins).collect();
        let seg_bins = Tensor::from_i64(&seg_bins_ids, &[plan.values()])?;
        let members = plan.members.len() as i64;
        let counts = Tensor::from_f32(&plan.segment_counts(), &[members])?;
        let sqrt_nm1 = Tensor::from_f32(&plan.segment_sqrt_nm1(), &[members])?;
        let ones = Tensor::ones(&[plan.values()], Dtype::F32)?;
        let mut slice_views = Vec::new();
        for (start, len) in plan::slices(n, plan.chunk_len(), plan::SLICE_ELEMENTS) {
            slice_views.push((
                staging.narrow(0, start, len)?,
                momentum.narrow(0, start, len)?,
            ));
        }
        Ok(Self {
            plan,
            bases_w,
            bases_h,
            momentum,
            staging,
            staging_views,
            theta_views,
            seg,
            seg_bins,
            counts,
            sqrt_nm1,
            ones,
            peer_tables: None,
            dense: None,
            slice_views,
            dense_slices: Vec::new(),
        })
    }

    /// `Fᵀ_h X F_w` per chunk of `x` `[n, h, w]`.
    fn dct(&self, x: &Tensor) -> Result<Tensor> {
        let (h, w) = (self.plan.h, self.plan.w);
        let rows = x.view(&[-1, w])?.matmul(&self.bases_w.f)?;
        match &self.bases_h {
            Some(bh) => bh.ft.matmul(&rows.view(&[-1, h, w])?),
            None => rows.view(&[-1, 1, w]),
        }
    }

    /// `F_h C F_wᵀ` per chunk of `c` `[n, h, w]`.
    fn idct(&self, c: &Tensor) -> Result<Tensor> {
        let w = self.plan.w;
        let cols = match &self.bases_h {
            Some(bh) => bh.f.matmul(c)?,
            None => c.view(&[-1, w])?,
        };
        cols.view(&[-1, w])?.matmul(&self.bases_w.ft)
    }

    /// `M ← β·M + η·DCT(g)` for the bucket's gradients (`grads` in parameter order), then
    /// `|M|` into the staging buffer for the top-k.
    ///
    /// The DCT runs a cache-sized slice at a time ([`plan::SLICE_ELEMENTS`]): its two GEMMs
    /// allocate their outputs, and a bucket-sized (128 MB on `small`) fresh allocation costs
    /// more in page faults than the GEMM itself; a slice's outputs are small, reused by the
    /// allocator and consumed while still in cache.
    pub fn accumulate(&self, grads: &[Tensor], hp: &Hyper) -> Result<()> {
        let (h, w) = (self.plan.h, self.plan.w);
        // Stage: one copy per gradient into chunk layout (converting bf16 to f32 on the way).
        for (m, dst) in self.plan.members.iter().zip(&self.staging_views) {
            let g = &grads[m.param];
            match m.blocked_shape(h, w) {
                Some(s) => dst.copy_(&g.view(&s)?.permute(&[0, 2, 1, 3])?)?,
                None => dst.copy_(g)?,
            }
        }
        for (staging, momentum) in &self.slice_views {
            let step = self.dct(staging)?;
            step.mul_(hp.lr)?;
            momentum.mul_(hp.momentum_decay)?;
            momentum.add_(&step)?;
            // |M| as sign(M)·M, in place over the staged slice the DCT has consumed: `abs`
            // would allocate.
            staging.copy_(momentum)?;
            staging.sign_()?;
            staging.mul_(momentum)?;
        }
        Ok(())
    }

    /// Top-k per chunk of |M|, quantised per tensor, and the error feedback
    /// `M ← M − decompress(idx, dequantised)`.
    pub fn encode(&self, hp: &Hyper) -> Result<Encoded> {
        let p = &self.plan;
        let (n, k, len) = (p.chunks, p.k, p.chunk_len());
        let s = p.members.len() as i64;
        let bins = hp.bins;
        let coeffs = self.momentum.view(&[n, len])?;
        // |M|, which `accumulate` left in the staging buffer.
        let (_, idx) = self.staging.view(&[n, len])?.topk(k, -1, true, false)?;
        // Ascending indices make an upload canonical.
        let (idx, _) = idx.sort(-1, false)?;
        let v = coeffs.gather(-1, &idx)?.view(&[n * k])?;

        // shift = mean(v) per tensor.
        let sums = Tensor::zeros(&[s], Dtype::F32)?.scatter_add(0, &self.seg, &v)?;
        let shift = sums.div(&self.counts)?;
        let shift_e = shift.index_select(0, &self.seg)?;
        let centred = v.sub(&shift_e)?;
        // std = ‖c‖₂ / √(n − 1); scale = 6·std/256, or 1 where that is zero or not finite.
        let sq = Tensor::zeros(&[s], Dtype::F32)?.scatter_add(0, &self.seg, &centred.square()?)?;
        let std = sq.sqrt()?.div(&self.sqrt_nm1)?;
        let raw_scale = std.mul(hp.range_sigmas / bins as f64)?;
        let usable = raw_scale.isfinite()?.logical_and(&raw_scale.gt(0.0)?)?;
        let scale = raw_scale.where_self(&usable, 1.0)?;
        let q = centred
            .div(&scale.index_select(0, &self.seg)?)?
            .add((bins / 2) as f64)?
            .round()?
            .clamp(Some(0.0), Some((bins - 1) as f64))?
            .to_dtype(Dtype::I64)?;
        // lookup[b] = mean of the centred values in bin b, per tensor: bins are numbered
        // tensor·bins + b.
        let bin = self.seg_bins.add(&q)?;
        let lsum = Tensor::zeros(&[s * bins], Dtype::F32)?.scatter_add(0, &bin, &centred)?;
        let lcnt = Tensor::zeros(&[s * bins], Dtype::F32)?.scatter_add(0, &bin, &self.ones)?;
        let lookup = lsum.div(&lcnt.clamp_min(1.0)?)?;
        // Dequantised: lookup[q] + shift.
        let values = lookup.index_select(0, &bin)?.add(&shift_e)?.view(&[n, k])?;
        // Error feedback in DCT space: within one upload the indices of a chunk are distinct,
        // so decompression is a plain scatter and M[idx] − value is one scatter_add_.
        coeffs.scatter_add_(1, &idx, &values.neg()?)?;
        Ok(Encoded {
            idx,
            codes: q.to_dtype(Dtype::U8)?.view(&[n, k])?,
            shift,
            scale,
            lookup: lookup.view(&[s, bins])?,
            values,
        })
    }

    /// The bucket's encoding as per-tensor uploads, `(param, upload)`.
    pub fn uploads(&self, e: &Encoded, bins: i64) -> Result<Vec<(usize, Upload)>> {
        let shifts = e.shift.split(1, 0)?;
        let scales = e.scale.split(1, 0)?;
        let lookups = e.lookup.view(&[-1])?.split(bins, 0)?;
        let mut out = Vec::with_capacity(self.plan.members.len());
        for (((m, shift), scale), lookup) in self
            .plan
            .members
            .iter()
            .zip(shifts)
            .zip(scales)
            .zip(lookups)
        {
            out.push((
                m.param,
                Upload {
                    idx: e.idx.narrow(0, m.offset, m.chunks)?,
                    codes: e.codes.narrow(0, m.offset, m.chunks)?,
                    shift,
                    scale,
                    lookup,
                },
            ));
        }
        Ok(out)
    }

    /// Builds the segment tables for `peers` stacked peer uploads (once per peer count).
    fn ensure_peer_tables(&mut self, peers: usize, bins: i64) -> Result<()> {
        if matches!(self.peer_tables, Some((p, ..)) if p == peers) {
            return Ok(());
        }
        let ids = self.plan.stacked_segment_ids(peers);
        let total = ids.len() as i64;
        let first_bins: Vec<i64> = ids.iter().map(|s| s * bins).collect();
        let ones = Tensor::ones(
            &[self.plan.chunks, (peers as i64 + 1) * self.plan.k],
            Dtype::F32,
        )?;
        self.peer_tables = Some((
            peers,
            Tensor::from_i64(&ids, &[total])?,
            Tensor::from_i64(&first_bins, &[total])?,
            ones,
        ));
        Ok(())
    }

    /// Aggregates the own encoding with the peers' uploads (`peers[j][param]`) and applies
    /// `θ ← θ·(1 − η·λ) − η·sign(IDCT(A))` to every member.
    pub fn aggregate_and_apply(
        &mut self,
        own: &Encoded,
        peers: &[Vec<Upload>],
        hp: &Hyper,
        params: &[Tensor],
    ) -> Result<()> {
        let (n, k, len) = (self.plan.chunks, self.plan.k, self.plan.chunk_len());
        let sources = peers.len() as i64 + 1;
        if !peers.is_empty() {
            self.ensure_peer_tables(peers.len(), hp.bins)?;
        }
        let mut idx_parts: Vec<Tensor> = vec![own.idx.view(&[1, n, k])?];
        let mut val_parts: Vec<Tensor> = vec![own.values.view(&[1, n, k])?];
        let ones = match &self.peer_tables {
            Some((count, seg, seg_bins, ones)) if !peers.is_empty() => {
                // Every peer's tensors of this bucket, peer-major: [peers·chunks, k] and so on.
                let of = |f: fn(&Upload) -> &Tensor| -> Vec<&Tensor> {
                    peers
                        .iter()
                        .flat_map(|p| self.plan.members.iter().map(move |m| f(&p[m.param])))
                        .collect()
                };
                let idx = Tensor::cat(&of(|u| &u.idx), 0)?;
                let codes = Tensor::cat(&of(|u| &u.codes), 0)?;
                let lookup = Tensor::stack(&of(|u| &u.lookup), 0)?.view(&[-1])?;
                let shift = Tensor::stack(&of(|u| &u.shift), 0)?.view(&[-1])?;
                let bin = seg_bins.add(&codes.view(&[-1])?.to_dtype(Dtype::I64)?)?;
                let values = lookup
                    .index_select(0, &bin)?
                    .add(&shift.index_select(0, seg)?)?;
                let p = *count as i64;
                idx_parts.push(idx.view(&[p, n, k])?);
                val_parts.push(values.view(&[p, n, k])?);
                ones.view(&[n, sources * k])?
            }
            _ => self.ones.view(&[n, k])?,
        };
        let idx_refs: Vec<&Tensor> = idx_parts.iter().collect();
        let val_refs: Vec<&Tensor> = val_parts.iter().collect();
        // [sources, chunks, k]: each source's values divided by their per-chunk L2 norm.
        let values = Tensor::cat(&val_refs, 0)?;
        let norms = values.norm_dims(2.0, &[-1], true)?.add(1e-8)?;
        let values = values
            .div(&norms)?
            .permute(&[1, 0, 2])?
            .reshape(&[n, sources * k])?;
        // Own first, then the peers, per chunk: the reference's concatenation order.
        let idx = Tensor::cat(&idx_refs, 0)?
            .permute(&[1, 0, 2])?
            .reshape(&[n, sources * k])?;
        // Decompression with mean reduction, in place in persistent buffers (no fresh
        // bucket-sized allocations): the sums in `dense`, the counts in the staging buffer,
        // free again once the top-k has read |M|.
        if self.dense.is_none() {
            let sums = Tensor::zeros(&[n, len], Dtype::F32)?;
            let (h, w) = (self.plan.h, self.plan.w);
            for (start, rows) in plan::slices(n, len, plan::SLICE_ELEMENTS) {
                self.dense_slices
                    .push(sums.narrow(0, start, rows)?.view(&[rows, h, w])?);
            }
            self.dense = Some(sums);
        }
        let Some(sums) = &self.dense else {
            return Err(crusades_sdk::Error::guest("no aggregation buffer"));
        };
        let counts = self.staging.view(&[n, len])?;
        sums.zero_()?;
        sums.scatter_add_(1, &idx, &values)?;
        counts.zero_()?;
        counts.scatter_add_(1, &idx, &ones)?;
        // A = sums / max(counts, 1), then η·sign(IDCT(A)) into the staging buffer, a slice at a
        // time (see `accumulate`); each slice's counts are read before its step overwrites them.
        for (sums, (staging, _)) in self.dense_slices.iter().zip(&self.slice_views) {
            staging.clamp_(Some(1.0), None)?;
            sums.div_(staging)?;
            let step = self.idct(sums)?;
            step.sign_()?;
            step.mul_(hp.lr)?;
            staging.copy_(&step.view(&[-1, self.plan.h, self.plan.w])?)?;
        }
        let (h, w) = (self.plan.h, self.plan.w);
        let decay = 1.0 - hp.lr * hp.weight_decay;
        for ((m, theta_view), step) in self
            .plan
            .members
            .iter()
            .zip(&self.theta_views)
            .zip(&self.staging_views)
        {
            params[m.param].mul_(decay)?;
            match m.blocked_shape(h, w) {
                Some(_) => theta_view.sub_(&step.permute(&[0, 2, 1, 3])?)?,
                None => theta_view.sub_(step)?,
            }
        }
        Ok(())
    }
}
