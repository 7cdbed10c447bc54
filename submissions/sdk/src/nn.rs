//! LLaMA building blocks as plain code over registry ops: linear, RMSNorm, rotary embeddings
//! (rotate-half), causal attention with grouped-query heads, and the SwiGLU MLP.
//!
//! Each function issues the same ops in the same order as the native reference
//! (`reference/src/model.rs`), so a model built from them reproduces its values bit for bit on
//! the same device.

use crate::{Result, Tensor};

/// `x · wᵀ (+ b)`, w `[out, in]`.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    x.linear(w, bias)
}

/// RMSNorm over the last axis of size `dim`, scaled by `weight`.
pub fn rms_norm(x: &Tensor, dim: i64, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.rms_norm(&[dim], Some(weight), Some(eps))
}

/// cos and sin tables `[t, head_dim]` (row-major) for rotate-half RoPE: angle
/// `pos / θ^(2i/head_dim)` for `i < head_dim/2`, both halves of a head sharing the frequencies.
/// Computed in f64 and rounded to f32, as the reference does; the frequencies use the
/// correctly rounded [`math::pow`](crate::math::pow), which reproduces the native (glibc) values
/// that a wasm guest's bundled libm would miss by an ulp now and then.
pub fn rope_table_values(t: i64, head_dim: i64, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let n = (t.max(0) * head_dim.max(0)) as usize;
    // θ^(2i/d) does not depend on the position: one pow per frequency.
    let freqs: Vec<f64> = (0..half)
        .map(|i| crate::math::pow(theta, (2 * i) as f64 / head_dim as f64))
        .collect();
    let mut cos = Vec::with_capacity(n);
    let mut sin = Vec::with_capacity(n);
    let mut angles = vec![0f64; half.max(0) as usize];
    for pos in 0..t {
        for (a, f) in angles.iter_mut().zip(&freqs) {
            *a = pos as f64 / f;
        }
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos() as f32));
            sin.extend(angles.iter().map(|a| a.sin() as f32));
        }
    }
    (cos, sin)
}

/// The RoPE tables as host tensors `[t, head_dim]`: (cos, sin).
pub fn rope_tables(t: i64, head_dim: i64, theta: f64) -> Result<(Tensor, Tensor)> {
    let (cos, sin) = rope_table_values(t, head_dim, theta);
    Ok((
        Tensor::from_f32(&cos, &[t, head_dim])?,
        Tensor::from_f32(&sin, &[t, head_dim])?,
    ))
}

/// `x·cos + rotate_half(x)·sin` over the last axis of `x` `[batch, heads, seq, head_dim]`, with
/// `rotate_half(x) = [−x₂, x₁]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, head_dim: i64) -> Result<Tensor> {
    let half = head_dim / 2;
    let x1 = x.narrow(3, 0, half)?;
    let x2 = x.narrow(3, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    let a = x.mul(cos)?;
    let b = rotated.mul(sin)?;
    a.add(&b)
}

/// Each of `kv_heads` key/value heads repeated for its `heads / kv_heads` query heads
/// (`[b, kv_heads, s, d]` → `[b, heads, s, d]`); the tensor itself when they are equal.
pub fn repeat_kv(x: Tensor, heads: i64, kv_heads: i64) -> Result<Tensor> {
    if kv_heads == heads {
        return Ok(x);
    }
    if kv_heads < 1 || heads % kv_heads != 0 {
        return Err(crate::Error::guest(format!(
            "{heads} query heads cannot share {kv_heads} key/value heads"
        )));
    }
    x.repeat_interleave(heads / kv_heads, 1)
}

/// Causal scaled-dot-product attention, scale 1/√head_dim, over `[b, h, s, d]` q, k, v
/// (k and v already expanded to q's heads).
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    Tensor::scaled_dot_product_attention(q, k, v, true, None, false)
}

/// The SwiGLU MLP: `down(silu(gate(x)) · up(x))`.
pub fn swiglu(x: &Tensor, gate: &Tensor, up: &Tensor, down: &Tensor) -> Result<Tensor> {
    let g = x.linear(gate, None)?.silu()?;
    let u = x.linear(up, None)?;
    g.mul(&u)?.linear(down, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_tables_hold_the_rotate_half_layout() {
        let (t, hd) = (5, 8);
        let (cos, sin) = rope_table_values(t, hd, 10_000.0);
        assert_eq!(cos.len(), (t * hd) as usize);
        assert_eq!(sin.len(), (t * hd) as usize);
        // Position 0: every angle is 0.
        assert!(cos[..8].iter().all(|c| *c == 1.0));
        assert!(sin[..8].iter().all(|s| *s == 0.0));
        for pos in 0..t as usize {
            let row = pos * hd as usize;
            // Both halves share the frequencies.
            assert_eq!(cos[row..row + 4], cos[row + 4..row + 8]);
            assert_eq!(sin[row..row + 4], sin[row + 4..row + 8]);
            for i in 0..4 {
                let angle = pos as f64 / crate::math::pow(10_000.0, 2.0 * i as f64 / 8.0);
                assert_eq!(cos[row + i], angle.cos() as f32);
                assert_eq!(sin[row + i], angle.sin() as f32);
                let r = (cos[row + i] as f64).hypot(sin[row + i] as f64);
                assert!((r - 1.0).abs() < 1e-6);
            }
        }
        // Frequency 0 turns one radian per position.
        assert_eq!(cos[hd as usize], 1f64.cos() as f32);
    }

    /// Natively `f64::powf` is the platform libm that the reference uses: on glibc, the tables
    /// with the correctly rounded pow equal the reference's, bit for bit.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn rope_tables_equal_the_native_libm_tables() {
        fn libm_tables(t: i64, hd: i64) -> (Vec<f32>, Vec<f32>) {
            let (mut cos, mut sin) = (Vec::new(), Vec::new());
            for pos in 0..t {
                let angles: Vec<f64> = (0..hd / 2)
                    .map(|i| pos as f64 / 10_000f64.powf((2 * i) as f64 / hd as f64))
                    .collect();
                for _ in 0..2 {
                    cos.extend(angles.iter().map(|a| a.cos() as f32));
                    sin.extend(angles.iter().map(|a| a.sin() as f32));
                }
            }
            (cos, sin)
        }
        for hd in [32, 64, 128] {
            let ours = rope_table_values(2048, hd, 10_000.0);
            assert!(ours == libm_tables(2048, hd), "head_dim {hd}");
        }
    }
}
