//! Pure-Rust planning for the batched compressor: which parameters share a chunk geometry
//! (a *bucket*), where each one's chunks sit in the bucket's stacked layout, and the constant
//! index tables that let one op do per-tensor work for every tensor of a bucket at once.
//!
//! Why buckets: the reference compresses tensor by tensor (≈ 30 host calls and two small
//! GEMMs per tensor, 75 tensors on `small`). Every chunk of a bucket is an `h × w` block with
//! the same DCT bases and the same `k`, so stacking all of a bucket's chunks as `[chunks, h, w]`
//! turns the DCT into two large GEMMs, the top-k into one call over every chunk, and the
//! per-tensor quantisation statistics into segmented reductions (`scatter_add` keyed by the
//! tensor's segment id). Nothing here talks to the host, so it is unit-tested on the host.

use crusades_sdk::compress::chunk_size;

/// One parameter's place in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Index in the model's parameter order.
    pub param: usize,
    /// The parameter's shape: `[N]` or `[R, C]`.
    pub shape: Vec<i64>,
    /// First chunk of this parameter in the bucket's `[chunks, h, w]` layout.
    pub offset: i64,
    /// Its number of chunks.
    pub chunks: i64,
}

impl Member {
    /// The chunk grid as it is laid out in the bucket: `[R/h, C/w, h, w]` for a matrix,
    /// `[N]` for a vector (whose chunks are its consecutive runs of `w`).
    pub fn chunked_shape(&self, h: i64, w: i64) -> Vec<i64> {
        match *self.shape {
            [r, c] => vec![r / h, c / w, h, w],
            _ => self.shape.clone(),
        }
    }

    /// The parameter viewed so that a `permute([0, 2, 1, 3])` of it is
    /// [`chunked_shape`](Self::chunked_shape): `[R/h, h, C/w, w]` (a vector needs no view).
    pub fn blocked_shape(&self, h: i64, w: i64) -> Option<Vec<i64>> {
        match *self.shape {
            [r, c] => Some(vec![r / h, h, c / w, w]),
            _ => None,
        }
    }
}

/// Parameters whose chunks are all `h × w` (a vector's chunks are `1 × w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub h: i64,
    pub w: i64,
    /// Coefficients kept per chunk: `min(topk, h·w)`.
    pub k: i64,
    /// In parameter order; their chunks are consecutive in that order.
    pub members: Vec<Member>,
    /// Chunks of all members.
    pub chunks: i64,
}

impl Bucket {
    pub fn chunk_len(&self) -> i64 {
        self.h * self.w
    }

    /// Selected values of the whole bucket: `chunks · k`.
    pub fn values(&self) -> i64 {
        self.chunks * self.k
    }

    /// The segment (member position) of every selected value, row-major over `[chunks, k]`:
    /// the key of the per-tensor reductions.
    pub fn segment_ids(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.values() as usize);
        for (s, m) in self.members.iter().enumerate() {
            out.extend(std::iter::repeat_n(s as i64, (m.chunks * self.k) as usize));
        }
        out
    }

    /// `segment_ids` for `sources` stacked copies of the bucket, copy `j` numbered after the
    /// `j·members` segments before it: `[sources, chunks·k]` row-major.
    pub fn stacked_segment_ids(&self, sources: usize) -> Vec<i64> {
        let one = self.segment_ids();
        let s = self.members.len() as i64;
        let mut out = Vec::with_capacity(one.len() * sources);
        for j in 0..sources as i64 {
            out.extend(one.iter().map(|id| id + j * s));
        }
        out
    }

    /// Values per member (`chunks·k`), the divisor of the mean.
    pub fn segment_counts(&self) -> Vec<f32> {
        self.members
            .iter()
            .map(|m| (m.chunks * self.k) as f32)
            .collect()
    }

    /// `√(n − 1)` per member, computed in f64 and rounded to f32, as the reference's
    /// `norm / √(n − 1)` rounds its f64 divisor to the tensor's f32.
    pub fn segment_sqrt_nm1(&self) -> Vec<f32> {
        self.members
            .iter()
            .map(|m| (((m.chunks * self.k) as f64) - 1.0).sqrt() as f32)
            .collect()
    }
}

/// Buckets for `shapes` (in parameter order), in order of first appearance. Every shape must be
/// a non-empty `[N]` or `[R, C]`; `chunk` is the target chunk size and `topk` the coefficients
/// kept per chunk.
pub fn buckets(shapes: &[Vec<i64>], chunk: i64, topk: i64) -> Result<Vec<Bucket>, String> {
    let mut out: Vec<Bucket> = Vec::new();
    for (param, shape) in shapes.iter().enumerate() {
        let (h, w, chunks) = match **shape {
            [n] if n > 0 => {
                let w = chunk_size(n, chunk);
                (1, w, n / w)
            }
            [r, c] if r > 0 && c > 0 => {
                let (h, w) = (chunk_size(r, chunk), chunk_size(c, chunk));
                (h, w, (r / h) * (c / w))
            }
            _ => {
                return Err(format!(
                    "parameter {param}: the compressor takes non-empty 1-D or 2-D tensors, not \
                     shape {shape:?}"
                ))
            }
        };
        let i = match out.iter().position(|b| b.h == h && b.w == w) {
            Some(i) => i,
            None => {
                out.push(Bucket {
                    h,
                    w,
                    k: topk.min(h * w),
                    members: Vec::new(),
                    chunks: 0,
                });
                out.len() - 1
            }
        };
        let b = &mut out[i];
        b.members.push(Member {
            param,
            shape: shape.clone(),
            offset: b.chunks,
            chunks,
        });
        b.chunks += chunks;
    }
    Ok(out)
}

/// Elements per slice of a bucket's dense pipeline (DCT, IDCT): 1M f32 = 4 MB, so the GEMM
/// outputs of a slice stay in cache and below the allocator's mmap threshold.
pub const SLICE_ELEMENTS: i64 = 1 << 20;

/// Consecutive `(first chunk, chunks)` ranges covering `chunks` chunks of `chunk_len` elements,
/// each at most `max_elements` (at least one chunk each).
pub fn slices(chunks: i64, chunk_len: i64, max_elements: i64) -> Vec<(i64, i64)> {
    let per = (max_elements / chunk_len.max(1)).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < chunks {
        let n = per.min(chunks - start);
        out.push((start, n));
        start += n;
    }
    out
}

/// The model's parameter names in canonical order (WORKLOAD.md; `reference/src/model.rs`).
pub fn param_names(layers: usize) -> Vec<String> {
    let mut names = vec!["model.embed_tokens.weight".to_string()];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        names.extend([
            format!("{p}.input_layernorm.weight"),
            format!("{p}.self_attn.q_proj.weight"),
            format!("{p}.self_attn.k_proj.weight"),
            format!("{p}.self_attn.v_proj.weight"),
            format!("{p}.self_attn.o_proj.weight"),
            format!("{p}.post_attention_layernorm.weight"),
            format!("{p}.mlp.gate_proj.weight"),
            format!("{p}.mlp.up_proj.weight"),
            format!("{p}.mlp.down_proj.weight"),
        ]);
    }
    names.push("model.norm.weight".into());
    names.push("lm_head.weight".into());
    names
}

/// The RoPE tables in the layout the fused attention uses: `cos` and a *signed* `sin`, each
/// `[t, head_dim]` row-major, such that `x·cos + cat(x₂, x₁)·sin_signed` equals the reference's
/// `x·cos + rotate_half(x)·sin` with `rotate_half(x) = cat(−x₂, x₁)`: the first half of
/// `sin_signed` is `−sin`. Negating a factor is exact, so this saves the `neg` op (and its
/// backward) at no cost in accuracy.
pub fn rope_signed_tables(t: i64, head_dim: i64, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let (cos, mut sin) = crusades_sdk::nn::rope_table_values(t, head_dim, theta);
    let half = (head_dim / 2) as usize;
    for row in sin.chunks_mut(head_dim.max(1) as usize) {
        for v in &mut row[..half] {
            *v = -*v;
        }
    }
    (cos, sin)
}

/// Query heads per key/value head, `r = H/H_kv`. The fused `q|k|v` projection output
/// `[b, t, (H + 2·H_kv)·d]` is viewed as `[b, t, r + 2, H_kv·d]`: r slots of q, one of k, one
/// of v, so `split(r + 1)` along the slots gives `q|k` (RoPE'd together) and v in two pieces.
pub fn qkv_groups(heads: i64, kv_heads: i64) -> Result<i64, String> {
    if kv_heads < 1 || heads < 1 || heads % kv_heads != 0 {
        return Err(format!(
            "{heads} query heads cannot share {kv_heads} key/value heads"
        ));
    }
    Ok(heads / kv_heads)
}

/// The piece sizes of `split(size)` along a dimension of length `len` (the last one shorter),
/// as libtorch splits.
pub fn split_sizes(len: i64, size: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        out.push(left.min(size));
        left -= size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_shapes() -> Vec<Vec<i64>> {
        let (v, d, kv, f) = (8192, 512, 256, 1408);
        let mut s = vec![vec![v, d]];
        for _ in 0..8 {
            s.extend([
                vec![d],
                vec![d, d],
                vec![kv, d],
                vec![kv, d],
                vec![d, d],
                vec![d],
                vec![f, d],
                vec![f, d],
                vec![d, f],
            ]);
        }
        s.push(vec![d]);
        s.push(vec![v, d]);
        s
    }

    #[test]
    fn small_has_one_matrix_bucket_and_one_vector_bucket() {
        let shapes = small_shapes();
        let b = buckets(&shapes, 64, 32).unwrap();
        assert_eq!(b.len(), 2);
        let (m, v) = (&b[0], &b[1]);
        assert_eq!((m.h, m.w, m.k), (64, 64, 32));
        assert_eq!((v.h, v.w, v.k), (1, 64, 32));
        assert_eq!(m.members.len() + v.members.len(), shapes.len());
        // Every element is in exactly one chunk.
        let elems: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
        assert_eq!(m.chunks * m.chunk_len() + v.chunks * v.chunk_len(), elems);
        // Chunks are consecutive in parameter order.
        let mut next = 0;
        for mem in &m.members {
            assert_eq!(mem.offset, next);
            next += mem.chunks;
        }
        assert_eq!(next, m.chunks);
        assert_eq!(m.members[0].param, 0);
        assert_eq!(m.members[0].chunks, 128 * 8);
        assert_eq!(v.members[0].param, 1);
        assert_eq!(v.members[0].chunks, 8);
    }

    #[test]
    fn odd_sizes_get_their_own_buckets() {
        // 100 → chunks of 50; 97 is prime → chunks of 1; a [97, 64] matrix has 1×64 chunks,
        // like a vector.
        let b = buckets(
            &[vec![100, 64], vec![64, 100], vec![97, 64], vec![128]],
            64,
            32,
        )
        .unwrap();
        let geo: Vec<(i64, i64, i64)> = b.iter().map(|b| (b.h, b.w, b.k)).collect();
        assert_eq!(geo, vec![(50, 64, 32), (64, 50, 32), (1, 64, 32)]);
        assert_eq!(b[2].members.len(), 2);
        assert_eq!(b[2].members[1].offset, 97);
        assert_eq!(b[2].chunks, 97 + 2);
        // k never exceeds the chunk.
        let b = buckets(&[vec![4]], 64, 32).unwrap();
        assert_eq!((b[0].w, b[0].k), (4, 4));
        assert!(buckets(&[vec![2, 3, 4]], 64, 32).is_err());
        assert!(buckets(&[vec![0]], 64, 32).is_err());
    }

    #[test]
    fn member_shapes_describe_the_chunk_permutation() {
        let b = buckets(&[vec![128, 192]], 64, 32).unwrap();
        let m = &b[0].members[0];
        assert_eq!(m.blocked_shape(64, 64), Some(vec![2, 64, 3, 64]));
        assert_eq!(m.chunked_shape(64, 64), vec![2, 3, 64, 64]);
        assert_eq!(m.chunks, 6);
        let b = buckets(&[vec![256]], 64, 32).unwrap();
        assert_eq!(b[0].members[0].blocked_shape(1, 64), None);
        assert_eq!(b[0].members[0].chunked_shape(1, 64), vec![256]);
    }

    #[test]
    fn segment_tables() {
        let b = &buckets(&[vec![64, 128], vec![128], vec![64, 64]], 64, 32).unwrap();
        let m = &b[0];
        assert_eq!(m.members.len(), 2);
        let ids = m.segment_ids();
        assert_eq!(ids.len() as i64, m.values());
        assert_eq!(ids.iter().filter(|s| **s == 0).count(), 2 * 32);
        assert_eq!(ids.iter().filter(|s| **s == 1).count(), 32);
        assert!(ids.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(m.segment_counts(), vec![64.0, 32.0]);
        assert_eq!(
            m.segment_sqrt_nm1(),
            vec![63f64.sqrt() as f32, 31f64.sqrt() as f32]
        );
        let stacked = m.stacked_segment_ids(3);
        assert_eq!(stacked.len(), 3 * ids.len());
        assert_eq!(stacked[ids.len()], 2);
        assert_eq!(*stacked.last().unwrap(), 5);
    }

    #[test]
    fn slices_cover_the_bucket() {
        // small's matrix bucket: 7936 chunks of 4096 → 256 chunks (4 MB) per slice.
        let s = slices(7936, 4096, SLICE_ELEMENTS);
        assert_eq!(s.len(), 31);
        assert!(s.iter().all(|(_, n)| *n == 256));
        let s = slices(1000, 4096, SLICE_ELEMENTS);
        assert_eq!(s, vec![(0, 256), (256, 256), (512, 256), (768, 232)]);
        // Chunks larger than a slice still get one each.
        assert_eq!(slices(3, 10, 4), vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(slices(0, 64, 100), vec![]);
        let s = slices(137, 64, 1000);
        assert_eq!(s.iter().map(|(_, n)| n).sum::<i64>(), 137);
        assert!(s.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
    }

    #[test]
    fn parameter_names_follow_the_reference_order() {
        let names = param_names(2);
        assert_eq!(names.len(), 1 + 2 * 9 + 2);
        assert_eq!(names[2], "model.layers.0.self_attn.q_proj.weight");
        assert_eq!(names[10], "model.layers.1.input_layernorm.weight");
        assert_eq!(names[20], "lm_head.weight");
    }

    #[test]
    fn signed_rope_tables_reproduce_rotate_half() {
        let (t, hd) = (7, 8);
        let (cos, sin) = crusades_sdk::nn::rope_table_values(t, hd, 10_000.0);
        let (cos2, sin_signed) = rope_signed_tables(t, hd, 10_000.0);
        assert_eq!(cos, cos2);
        let x: Vec<f32> = (0..hd).map(|i| 0.25 * i as f32 - 0.7).collect();
        let half = (hd / 2) as usize;
        for pos in 0..t as usize {
            let row = pos * hd as usize;
            for i in 0..hd as usize {
                let (c, s, ss) = (cos[row + i], sin[row + i], sin_signed[row + i]);
                // reference: x·cos + rotate_half(x)·sin, rotate_half = cat(−x₂, x₁)
                let rot = if i < half { -x[i + half] } else { x[i - half] };
                let want = x[i] * c + rot * s;
                // fast: x·cos + cat(x₂, x₁)·sin_signed
                let swapped = if i < half { x[i + half] } else { x[i - half] };
                let got = x[i] * c + swapped * ss;
                assert_eq!(got.to_bits(), want.to_bits());
            }
        }
    }

    #[test]
    fn qkv_splits() {
        // The fused projection viewed as [b, t, r + 2, H_kv·d] splits with size r + 1 into
        // q|k and v; RoPE'd q|k viewed as [b, t, H + H_kv, d] splits with size H into q and k.
        let pieces = |h: i64, hkv: i64| {
            let r = qkv_groups(h, hkv).unwrap();
            (split_sizes(r + 2, r + 1), split_sizes(h + hkv, h))
        };
        // small: 8 heads over 4 kv heads → slots [q q k v].
        assert_eq!(pieces(8, 4), (vec![3, 1], vec![8, 4]));
        // 150m: no sharing.
        assert_eq!(pieces(16, 16), (vec![2, 1], vec![16, 16]));
        // Any grouping gives exactly two pieces each time.
        for hkv in 1..5 {
            for r in 1..9 {
                let (a, b) = pieces(r * hkv, hkv);
                assert_eq!((a.len(), b.len()), (2, 2), "r {r}, kv heads {hkv}");
                assert_eq!(a[1], 1);
                assert_eq!(b[1], hkv);
            }
        }
        assert!(qkv_groups(8, 3).is_err());
        assert!(qkv_groups(8, 0).is_err());
    }
}
