//! The LLaMA-style decoder's loss in mixed precision: bf16 GEMMs and attention, f32 master
//! weights, f32 residual stream, norms and loss.
//!
//! What differs from the reference's forward (`reference/src/model.rs`), and why:
//! - **bf16 compute, f32 master weights.** Each window the layers' f32 matrices are cast to
//!   bf16 copies that are autograd leaves of their own ([`Weights`]); their bf16 gradients are
//!   converted to f32 by the compressor as it stages them, so the update and the momentum are
//!   f32 throughout. (The head is cast on the tape, per loss slice: see below.) On a CPU with AVX512-BF16 (or a GPU's tensor cores) a bf16 GEMM runs
//!   2–3× faster than an f32 one, and the GEMMs are most of the window.
//! - **f32 where precision is cheap.** The residual stream, the RMSNorms and the embedding
//!   lookup stay f32 (memory-bound, a small share of the time); the norm's output is cast to
//!   bf16 for the next GEMM. The logits are cast to f32 before `cross_entropy`, so the loss
//!   (and its softmax) is f32 as WORKLOAD.md asks and the host counts every token.
//! - **Fused projections.** `q|k|v` is one GEMM against `cat(W_q, W_k, W_v)` and `gate|up` one
//!   against `cat(W_gate, W_up)`: fewer, larger GEMMs and fewer host calls. The outputs are cut
//!   with `split`/`chunk`, whose backward is one `cat`; `narrow` would cost a zero-filled
//!   full-size gradient per slice.
//! - **RoPE on q and k at once**, with a signed sine table (no `neg`, see
//!   [`rope_signed_tables`](crate::plan::rope_signed_tables)), in the `[b, t, heads, d]` layout
//!   the projection produces, so nothing is transposed and copied before attention.
//! - **The head and the loss in token slices** ([`loss_slices`]): each slice's logits stay in
//!   cache instead of allocating ~0.5 GB of fresh logits, log-softmax and gradients per
//!   window.
//! - **Fused attention with native GQA**: `scaled_dot_product_attention(…, enable_gqa)` reads
//!   the `H_kv` key/value heads directly instead of `repeat_interleave`-ing them to `H` (no
//!   copy forward, no reduction backward), and takes the strided views as they are.

use crusades_sdk::workload::ModelConfig;
use crusades_sdk::{Dtype, Error, Result, Tensor};

use crate::plan;

/// Parameters per decoder layer: input norm, q, k, v, o, post-attention norm, gate, up, down.
pub const PER_LAYER: usize = 9;

/// The dtype of the GEMMs and attention: bf16, or f32 with the `f32-train` feature (a
/// validation mode that isolates the compressor from bf16 rounding).
#[cfg(not(feature = "f32-train"))]
pub const COMPUTE: Dtype = Dtype::Bf16;
#[cfg(feature = "f32-train")]
pub const COMPUTE: Dtype = Dtype::F32;

/// The model's shape and the constants its forward needs.
pub struct Model {
    pub config: ModelConfig,
    /// Query heads per key/value head.
    groups: i64,
    /// (T, cos `[T, 1, d]`, signed sin `[T, 1, d]`) in the compute dtype, for the last T.
    rope: Option<(i64, Tensor, Tensor)>,
}

impl Model {
    pub fn new(config: ModelConfig) -> Result<Self> {
        let (d, h, hkv) = (config.d_model, config.heads, config.kv_heads);
        if h == 0 || d % h != 0 || (d / h) % 2 != 0 {
            return Err(Error::guest(format!(
                "d_model {d} and {h} heads: heads must divide d_model into even head dims"
            )));
        }
        let groups = plan::qkv_groups(h as i64, hkv as i64).map_err(Error::guest)?;
        Ok(Self {
            config,
            groups,
            rope: None,
        })
    }

    fn rope(&mut self, t: i64) -> Result<(&Tensor, &Tensor)> {
        let m = self.config;
        let hd = m.head_dim();
        if !matches!(self.rope, Some((len, _, _)) if len == t) {
            let (cos, sin) = plan::rope_signed_tables(t, hd, m.rope_theta);
            let cos = Tensor::from_f32(&cos, &[t, 1, hd])?.to_dtype(COMPUTE)?;
            let sin = Tensor::from_f32(&sin, &[t, 1, hd])?.to_dtype(COMPUTE)?;
            self.rope = Some((t, cos, sin));
        }
        match &self.rope {
            Some((_, cos, sin)) => Ok((cos, sin)),
            None => Err(Error::guest("no RoPE tables")),
        }
    }

    /// The compute-dtype weights of one window, made under no-grad from the f32 master
    /// weights (see [`Weights`]).
    fn cast(&self, params: &[Tensor]) -> Result<Weights> {
        let m = self.config;
        let want = 1 + m.layers as usize * PER_LAYER + 2;
        if params.len() != want {
            return Err(Error::guest(format!(
                "the model has {want} parameters, got {}",
                params.len()
            )));
        }
        let _no_grad = crusades_sdk::no_grad()?;
        let leaf = |t: Tensor| -> Result<Tensor> {
            t.requires_grad_(true)?;
            Ok(t)
        };
        let mut layers = Vec::with_capacity(m.layers as usize);
        for layer in 0..m.layers as usize {
            let p = &params[1 + layer * PER_LAYER..1 + (layer + 1) * PER_LAYER];
            layers.push(LayerWeights {
                qkv: leaf(Tensor::cat(&[&p[1], &p[2], &p[3]], 0)?.to_dtype(COMPUTE)?)?,
                o: leaf(p[4].to_dtype(COMPUTE)?)?,
                gate_up: leaf(Tensor::cat(&[&p[6], &p[7]], 0)?.to_dtype(COMPUTE)?)?,
                down: leaf(p[8].to_dtype(COMPUTE)?)?,
            });
        }
        Ok(Weights { layers })
    }

    /// The mean token cross-entropy (f32, on the autograd tape) of `inputs → labels`
    /// (i64 `[seqs, T]`). `params` are the f32 master weights in the model's order (the
    /// embedding and the norm weights are used as they are), `w` this window's casts.
    fn loss(
        &mut self,
        params: &[Tensor],
        w: &Weights,
        inputs: &Tensor,
        labels: &Tensor,
    ) -> Result<Tensor> {
        let m = self.config;
        let [b, t] = inputs.shape()[..] else {
            return Err(Error::guest(format!(
                "inputs must be [seqs, T], got {:?}",
                inputs.shape()
            )));
        };
        let (d, vocab, eps) = (m.d_model as i64, m.vocab as i64, m.rms_eps);
        let (hd, h, hkv) = (m.head_dim(), m.heads as i64, m.kv_heads as i64);
        let r = self.groups;
        let gqa = h != hkv;
        let (cos, sin) = self.rope(t)?;

        // The lookup is a gather: f32 costs nothing extra and keeps the embedding's gradient
        // (a scatter-add over repeated tokens) in f32.
        let mut x = Tensor::embedding(&params[0], inputs)?;
        for (layer, lw) in w.layers.iter().enumerate() {
            let p = &params[1 + layer * PER_LAYER..1 + (layer + 1) * PER_LAYER];
            // Attention.
            let a = x
                .rms_norm(&[d], Some(&p[0]), Some(eps))?
                .to_dtype(COMPUTE)?;
            // [b, t, r + 2 slots of H_kv·d]: r slots of q, then k, then v.
            let qkv = a.linear(&lw.qkv, None)?.view(&[b, t, r + 2, hkv * hd])?;
            let [qk, v] = two(qkv.split(r + 1, 2)?)?;
            let qk = qk.view(&[b, t, h + hkv, hd])?;
            let [x1, x2] = two(qk.chunk(2, -1)?)?;
            let swapped = Tensor::cat(&[&x2, &x1], -1)?;
            let qk = qk.mul(cos)?.add(&swapped.mul(sin)?)?;
            let [q, k] = two(qk.split(h, 2)?)?;
            let v = v.view(&[b, t, hkv, hd])?;
            let attn = Tensor::scaled_dot_product_attention(
                &q.transpose(1, 2)?,
                &k.transpose(1, 2)?,
                &v.transpose(1, 2)?,
                true,
                None,
                gqa,
            )?;
            let attn = attn
                .transpose(1, 2)?
                .reshape(&[b, t, d])?
                .linear(&lw.o, None)?;
            x = x.add(&attn)?;
            // SwiGLU MLP.
            let a = x
                .rms_norm(&[d], Some(&p[5]), Some(eps))?
                .to_dtype(COMPUTE)?;
            let [g, u] = two(a.linear(&lw.gate_up, None)?.chunk(2, -1)?)?;
            let mlp = g.silu()?.mul(&u)?.linear(&lw.down, None)?;
            x = x.add(&mlp)?;
        }
        let n = params.len();
        let x = x
            .rms_norm(&[d], Some(&params[n - 2]), Some(eps))?
            .to_dtype(COMPUTE)?
            .view(&[b * t, d])?;
        // The head and the loss, a slice of tokens at a time: the f32 logits of a slice fit in
        // the cache (and in memory the allocator reuses) where the whole window's (4096 tokens
        // × 8192 classes × 4 bytes = 128 MB on `small`, plus the bf16 logits, the log-softmax
        // and their gradients) would be fresh, page-faulting allocations. The head is cast on
        // the tape for each slice, so its slices' gradients add up in f32. The loss is the sum
        // of the slices' summed cross-entropies over the window's token count: the mean over
        // every token, as WORKLOAD.md asks, with every label counted by the host.
        let slices = loss_slices(b * t, vocab);
        let xs = x.chunk(slices, 0)?;
        let ys = labels.reshape(&[b * t])?.chunk(slices, 0)?;
        let head = &params[n - 1];
        let mut sums: Vec<Tensor> = Vec::with_capacity(xs.len());
        for (xi, yi) in xs.iter().zip(&ys) {
            sums.push(
                xi.linear(&head.to_dtype(COMPUTE)?, None)?
                    .to_dtype(Dtype::F32)?
                    .cross_entropy(yi, "sum")?,
            );
        }
        let total = match <[Tensor; 1]>::try_from(sums) {
            Ok([one]) => one,
            Err(sums) => Tensor::stack(&sums.iter().collect::<Vec<_>>(), 0)?.sum(None)?,
        };
        total.div((b * t) as f64)
    }

    /// The loss (detached) and, per parameter in the model's order, its gradient with the
    /// parameter's shape: f32 for the embedding and the norm weights, the compute dtype for
    /// the matrices (the compressor casts them to f32 as it stages them).
    pub fn loss_and_grads(
        &mut self,
        params: &[Tensor],
        inputs: &Tensor,
        labels: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let w = self.cast(params)?;
        let loss = self.loss(params, &w, inputs, labels)?;
        // The leaves: the embedding, every norm weight, the head (cast per loss slice on the
        // tape), then the layers' casts.
        let n = params.len();
        let mut leaves: Vec<&Tensor> = vec![&params[0]];
        for layer in 0..w.layers.len() {
            let b = 1 + layer * PER_LAYER;
            leaves.extend([&params[b], &params[b + 5]]);
        }
        leaves.push(&params[n - 2]);
        leaves.push(&params[n - 1]);
        let first_cast = leaves.len();
        for lw in &w.layers {
            leaves.extend([&lw.qkv, &lw.o, &lw.gate_up, &lw.down]);
        }
        let grads = Tensor::autograd_grad(&[&loss], &leaves, false)?;
        if grads.len() != leaves.len() {
            return Err(Error::guest(format!(
                "autograd_grad gave {} gradients for {} leaves",
                grads.len(),
                leaves.len()
            )));
        }
        drop(leaves);
        // Back to one gradient per parameter; q, k, v and gate, up are row ranges of their
        // fused gradient.
        let mut grads: Vec<Option<Tensor>> = grads.into_iter().map(Some).collect();
        let mut take = |i: usize| {
            grads[i]
                .take()
                .ok_or_else(|| Error::guest(format!("gradient {i} taken twice")))
        };
        let mut out: Vec<Tensor> = Vec::with_capacity(n);
        out.push(take(0)?);
        let rows = |i: usize| params[i].shape()[0];
        for layer in 0..w.layers.len() {
            let b = 1 + layer * PER_LAYER;
            let norm1 = take(1 + 2 * layer)?;
            let norm2 = take(2 + 2 * layer)?;
            let qkv = take(first_cast + 4 * layer)?;
            let o = take(first_cast + 4 * layer + 1)?;
            let gate_up = take(first_cast + 4 * layer + 2)?;
            let down = take(first_cast + 4 * layer + 3)?;
            let (nq, nk, nv) = (rows(b + 1), rows(b + 2), rows(b + 3));
            out.push(norm1);
            out.push(qkv.narrow(0, 0, nq)?);
            out.push(qkv.narrow(0, nq, nk)?);
            out.push(qkv.narrow(0, nq + nk, nv)?);
            out.push(o);
            out.push(norm2);
            let nf = rows(b + 6);
            out.push(gate_up.narrow(0, 0, nf)?);
            out.push(gate_up.narrow(0, nf, rows(b + 7))?);
            out.push(down);
        }
        out.push(take(first_cast - 2)?);
        out.push(take(first_cast - 1)?);
        Ok((loss.detach()?, out))
    }
}

/// One layer's compute-dtype weights: `q|k|v` and `gate|up` fused (one GEMM each).
struct LayerWeights {
    qkv: Tensor,
    o: Tensor,
    gate_up: Tensor,
    down: Tensor,
}

/// The layers' matrices of one window in the compute dtype, as autograd leaves of their own.
///
/// Why leaves rather than casts on the tape: the gradient then stops at the bf16 copy, and the
/// compressor's staging `copy_` (which permutes every gradient into chunk layout anyway) does
/// the bf16 → f32 conversion in the same pass. A cast on the tape would add a backward
/// `to_dtype` per matrix: one more full pass over every gradient and a fresh f32 allocation.
/// The values are the same: the cast's backward is exactly that conversion.
struct Weights {
    layers: Vec<LayerWeights>,
}

/// Logits per loss slice: 4M (16 MB in f32) keeps a slice's logits, log-softmax and
/// gradients in the last-level cache and below the allocator's mmap threshold.
pub const LOGITS_PER_SLICE: i64 = 1 << 22;

/// How many slices the head and the loss are computed in for `tokens` tokens over `vocab`
/// classes: enough that each holds at most [`LOGITS_PER_SLICE`] logits, at least one, at most
/// one per token.
pub fn loss_slices(tokens: i64, vocab: i64) -> i64 {
    let logits = tokens.max(1) * vocab.max(1);
    ((logits + LOGITS_PER_SLICE - 1) / LOGITS_PER_SLICE).clamp(1, tokens.max(1))
}

/// The two pieces of a `split`/`chunk` that must give two.
fn two(pieces: Vec<Tensor>) -> Result<[Tensor; 2]> {
    let n = pieces.len();
    <[Tensor; 2]>::try_from(pieces)
        .map_err(|_| Error::guest(format!("expected a split into 2 pieces, got {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_slices_bound_the_logits() {
        // tiny: 1024 tokens × 1024 classes fit in one slice.
        assert_eq!(loss_slices(1024, 1024), 1);
        // small: 4096 × 8192 = 32M logits → 8 slices of 512 tokens.
        assert_eq!(loss_slices(4096, 8192), 8);
        // 150m: 16384 × 32000 → 125 slices (of 131 or 132 tokens).
        assert_eq!(loss_slices(16384, 32000), 125);
        // Never more slices than tokens.
        assert_eq!(loss_slices(3, 1 << 30), 3);
        assert_eq!(loss_slices(0, 8), 1);
        for (tokens, vocab) in [(4096, 8192), (16384, 32000), (1000, 50257)] {
            let n = loss_slices(tokens, vocab);
            let per_slice = (tokens + n - 1) / n;
            assert!(
                per_slice * vocab <= LOGITS_PER_SLICE + vocab,
                "{tokens} × {vocab}"
            );
        }
    }
}
