//! What an op's outputs may allocate, bounded before it runs from its arguments' shapes and
//! dtypes alone: no allocation, no device synchronisation, a few metadata reads. The host holds
//! the bound against the tensor byte limit, so that a call whose outputs cannot fit (an outer
//! product, a huge `zeros`, a broadcast, a `repeat`) ends the run before libtorch allocates
//! anything: otherwise it fails inside libtorch or, through the kernel's overcommit, succeeds
//! and gets the worker killed when its pages are touched.
//!
//! A bound holds for every call that libtorch accepts. Where the arguments are inconsistent
//! (shapes that do not broadcast, a dim out of range, a dtype the op does not take; the rules
//! read arguments with the executors' own accessors), the bound is [`REFUSED`]: the op's own
//! checks then refuse the call with their usual, recoverable error, rather than the limit
//! ending the run over a call that would never have run.

use tch::{Kind, Tensor};

use super::{is_float, Args, Value};

/// An upper bound on what one call allocates and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Bytes of new tensors; `None` when the count overflows 64 bits (past any limit).
    pub bytes: Option<u64>,
    /// Tensors the call returns (each one a new handle).
    pub tensors: u64,
}

impl Bound {
    const fn one(bytes: Option<u64>) -> Self {
        Bound { bytes, tensors: 1 }
    }
}

/// The bound of a call its op will refuse, and of ops that return nothing.
pub const REFUSED: Bound = Bound {
    bytes: Some(0),
    tensors: 0,
};

/// How an op's allocation is bounded: part of every registry entry.
#[derive(Clone, Copy)]
pub enum Alloc {
    /// Nothing, and no tensors returned: in-place ops, `backward` (whose gradients the
    /// guest sees only through `grad`), no-grad scopes.
    Nothing,
    /// One tensor sharing its input's storage. (Its handle is still charged in full.)
    View,
    /// One tensor shaped like the first argument (unary ops, `*_like`, copies).
    Like,
    /// One tensor of the tensor arguments' broadcast shape (elementwise ops).
    Broadcast,
    /// A rule of the op's own.
    Rule(fn(&Args) -> Bound),
}

/// The bound of one call under `alloc`.
pub fn bound(alloc: Alloc, args: &Args) -> Bound {
    match alloc {
        Alloc::Nothing => REFUSED,
        Alloc::View => Bound::one(Some(0)),
        Alloc::Like => like(args, 1),
        Alloc::Broadcast => broadcast(args),
        Alloc::Rule(rule) => rule(args),
    }
}

/// The elements a tensor of `shape` is charged for: ∏ sizes, with a 0-sized dim counted as 1.
/// An empty tensor holds no data, but kernels still loop over its other dims (a sort along its
/// empty dim visits every slice): `[0, 2^40]` is no cheaper to work on than `[1, 2^40]`.
/// `None` when the product overflows; 0 for a negative size, which only an argument can hold
/// (and the op refuses).
pub fn numel_of(shape: &[i64]) -> Option<u64> {
    if shape.iter().any(|&d| d < 0) {
        return Some(0);
    }
    shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d.max(1) as u64))
}

fn numel(t: &Tensor) -> Option<u64> {
    numel_of(&t.size())
}

fn elt(kind: Kind) -> u64 {
    kind.elt_size_in_bytes() as u64
}

/// The element size of a result computed from `kind`: its own for floating-point kinds, 8 for
/// integer and bool kinds, which some ops widen (to i64, or to f32 with a float scalar).
fn widened(kind: Kind) -> u64 {
    if is_float(kind) {
        elt(kind)
    } else {
        8
    }
}

/// The element size of a result computed from several kinds: the widened size of the one kind
/// they share, or 8 when they differ (promotion can pick a kind wider than every input's:
/// bf16 with f16 gives f32).
fn common(kinds: impl IntoIterator<Item = Kind>) -> u64 {
    let mut shared = None;
    for k in kinds {
        match shared {
            None => shared = Some(k),
            Some(s) if s == k => {}
            Some(_) => return 8,
        }
    }
    shared.map_or(8, widened)
}

fn times(n: Option<u64>, by: u64) -> Option<u64> {
    n?.checked_mul(by)
}

fn mul(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a?.checked_mul(b?)
}

fn plus(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a?.checked_add(b?)
}

/// `dim` of a rank-`rank` tensor, negative dims counted from the end; `None` when out of range.
fn wrap_dim(dim: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let d = if dim < 0 { dim.checked_add(rank)? } else { dim };
    (0..rank).contains(&d).then_some(d as usize)
}

/// Broadcasts two shapes (right-aligned; sizes equal, or one of them 1); `None` when they do
/// not broadcast.
fn broadcast_pair(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let rank = a.len().max(b.len());
    let at = |s: &[i64], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// `n` tensors shaped like the first argument, of its widened element size.
pub fn like(a: &Args, n: u64) -> Bound {
    let Ok(t) = a.t(0) else { return REFUSED };
    Bound::one(times(numel(t), widened(t.kind()).saturating_mul(n)))
}

/// One tensor of the broadcast of every tensor argument. Its element size: that of the kind
/// the non-bool tensors share (bool conditions and masks never widen a result), 8 when they
/// differ or are integers; 4 for bool inputs alone (`div` and float scalars make f32).
pub fn broadcast(a: &Args) -> Bound {
    let mut shape: Vec<i64> = Vec::new();
    let mut kinds = Vec::with_capacity(3);
    for v in &a.values {
        if let Value::Tensor(t) = v {
            let Some(s) = broadcast_pair(&shape, &t.size()) else {
                return REFUSED;
            };
            shape = s;
            if t.kind() != Kind::Bool {
                kinds.push(t.kind());
            }
        }
    }
    let size = if kinds.is_empty() { 4 } else { common(kinds) };
    Bound::one(times(numel_of(&shape), size))
}

/// A new tensor of the shape in argument `shape` and the dtype in argument `dtype`.
pub fn creation(a: &Args, shape: usize, dtype: usize, default: Kind) -> Bound {
    let (Ok(shape), Ok(kind)) = (a.ints(shape), a.opt_dtype(dtype)) else {
        return REFUSED;
    };
    if shape.iter().any(|&d| d < 0) {
        return REFUSED;
    }
    Bound::one(times(numel_of(shape), elt(kind.unwrap_or(default))))
}

/// `arange(end)`: `end` elements.
pub fn arange(a: &Args) -> Bound {
    let (Ok(end), Ok(kind)) = (a.int(0), a.opt_dtype(1)) else {
        return REFUSED;
    };
    Bound::one(times(numel_of(&[end]), elt(kind.unwrap_or(Kind::Int64))))
}

/// `eye(n)`: n² elements.
pub fn eye(a: &Args) -> Bound {
    let (Ok(n), Ok(kind)) = (a.int(0), a.opt_dtype(1)) else {
        return REFUSED;
    };
    Bound::one(times(numel_of(&[n, n]), elt(kind.unwrap_or(Kind::Float))))
}

/// The first argument cast to the dtype in argument `dtype`.
pub fn cast(a: &Args, dtype: usize) -> Bound {
    let (Ok(t), Ok(Some(kind))) = (a.t(0), a.opt_dtype(dtype)) else {
        return REFUSED;
    };
    Bound::one(times(numel(t), elt(kind)))
}

/// A view of a contiguous first argument, a copy of any other (`contiguous`, `reshape`).
pub fn copy_unless_contiguous(a: &Args) -> Bound {
    match a.t(0) {
        Ok(t) if t.is_contiguous() => Bound::one(Some(0)),
        _ => like(a, 1),
    }
}

/// Elements left when `dims` of `shape` are reduced. An empty list or a dim out of range
/// counts every element, and at least one: an upper bound whatever libtorch makes of it (a
/// reduction over a 0-sized dim still leaves one element per kept position).
fn kept(shape: &[i64], dims: &[i64]) -> Option<u64> {
    let all = || numel_of(shape);
    if dims.is_empty() || shape.len() > 64 {
        return all();
    }
    let mut reduced = 0u64;
    for &d in dims {
        let Some(d) = wrap_dim(d, shape.len()) else {
            return all();
        };
        reduced |= 1 << d;
    }
    shape
        .iter()
        .enumerate()
        .filter(|(i, _)| reduced & (1 << i) == 0)
        .try_fold(1u64, |n, (_, &d)| n.checked_mul(d.max(1) as u64))
}

/// `tensors` outputs of the first argument reduced over `dims` (all of them when `None`), at
/// 8 bytes an element (sums of integers are i64; indices are i64).
pub fn reduce(a: &Args, dims: Option<&[i64]>, tensors: u64) -> Bound {
    let Ok(t) = a.t(0) else { return REFUSED };
    let n = match dims {
        None => Some(1),
        Some(dims) => kept(&t.size(), dims),
    };
    Bound {
        bytes: times(n, 8 * tensors),
        tensors,
    }
}

/// `sum` and `mean` (`dims` in argument 1, optional).
pub fn reduce_opt_dims(a: &Args) -> Bound {
    match a.opt_ints(1) {
        Ok(dims) => reduce(a, dims, 1),
        Err(_) => REFUSED,
    }
}

/// `amax`, `amin` (`dims` in argument 1).
pub fn reduce_dims(a: &Args) -> Bound {
    match a.ints(1) {
        Ok(dims) => reduce(a, Some(dims), 1),
        Err(_) => REFUSED,
    }
}

/// `logsumexp`: input-sized temporaries (the shifted input, its exponential) and the reduction.
pub fn logsumexp(a: &Args) -> Bound {
    Bound::one(plus(like(a, 2).bytes, reduce_dims(a).bytes))
}

/// `max_dim` (values and indices) and `argmax` (`dim` in argument 1).
pub fn reduce_dim(a: &Args, tensors: u64) -> Bound {
    match a.get(1).map(|_| a.int(1)).transpose() {
        Ok(Some(dim)) => reduce(a, Some(&[dim]), tensors),
        Ok(None) => reduce(a, None, tensors),
        Err(_) => REFUSED,
    }
}

/// `norm`: a reduction, after a flattening copy when it takes every dim with p ≠ 2.
pub fn norm(a: &Args) -> Bound {
    let (Ok(p), Ok(dims)) = (a.opt_float(1), a.opt_ints(2)) else {
        return REFUSED;
    };
    let out = reduce(a, dims, 1);
    if dims.is_none() && p.unwrap_or(2.0) != 2.0 {
        let flat = like(a, 1);
        return Bound::one(plus(out.bytes, flat.bytes));
    }
    out
}

/// `topk`: values and i64 indices, `k` along `dim` (k past the dim's size is refused, so it
/// counts up to that size).
pub fn topk(a: &Args) -> Bound {
    let (Ok(t), Ok(k), Ok(dim)) = (a.t(0), a.int(1), a.int_or(2, -1)) else {
        return REFUSED;
    };
    let shape = t.size();
    let per = elt(t.kind()) + 8;
    let n = match wrap_dim(dim, shape.len()) {
        Some(d) => {
            let k = k.clamp(0, shape[d].max(0));
            let rest: Vec<i64> = shape
                .iter()
                .enumerate()
                .map(|(i, &s)| if i == d { k } else { s })
                .collect();
            numel_of(&rest)
        }
        None => numel_of(&shape),
    };
    Bound {
        bytes: times(n, per),
        tensors: 2,
    }
}

/// `sort` (values and i64 indices; `argsort` returns only the indices, after making both).
pub fn sort(a: &Args, tensors: u64) -> Bound {
    let Ok(t) = a.t(0) else { return REFUSED };
    Bound {
        bytes: times(numel(t), elt(t.kind()) + 8),
        tensors,
    }
}

/// `gather`: the index's shape, the source's dtype.
pub fn gather(a: &Args) -> Bound {
    let (Ok(t), Ok(idx)) = (a.t(0), a.it(2)) else {
        return REFUSED;
    };
    Bound::one(times(numel(idx), elt(t.kind())))
}

/// `index_select`: the source with `dim`'s size replaced by the number of indices.
pub fn index_select(a: &Args) -> Bound {
    let (Ok(t), Ok(dim), Ok(idx)) = (a.t(0), a.int(1), a.it(2)) else {
        return REFUSED;
    };
    let mut shape = t.size();
    let n = numel(idx).map(|n| n.min(i64::MAX as u64) as i64);
    match (wrap_dim(dim, shape.len()), n) {
        (Some(d), Some(n)) => shape[d] = n,
        (None, _) if shape.is_empty() => {}
        (None, _) => return REFUSED,
        (_, None) => return Bound::one(None),
    }
    Bound::one(times(numel_of(&shape), elt(t.kind())))
}

/// `embedding`: one row of the 2-D weight per index.
pub fn embedding(a: &Args) -> Bound {
    let (Ok(w), Ok(idx)) = (a.ft(0), a.it(1)) else {
        return REFUSED;
    };
    let shape = w.size();
    if shape.len() != 2 {
        return REFUSED;
    }
    Bound::one(times(mul(numel(idx), numel_of(&shape[1..])), elt(w.kind())))
}

/// `cat` and `stack`: every listed tensor once (the list may name one tensor many times).
pub fn concat(a: &Args) -> Bound {
    let Ok(ts) = a.ts(0) else { return REFUSED };
    let n = ts.iter().try_fold(0u64, |n, t| n.checked_add(numel(t)?));
    Bound::one(times(n, common(ts.iter().map(Tensor::kind))))
}

/// The size of argument 0 along `dim`.
fn dim_len(a: &Args, dim: i64) -> Option<i64> {
    let shape = a.t(0).ok()?.size();
    wrap_dim(dim, shape.len()).map(|d| shape[d])
}

/// `split`: views, ⌈len / size⌉ of them.
pub fn split(a: &Args) -> Bound {
    let (Ok(size), Ok(dim)) = (a.int(1), a.int_or(2, 0)) else {
        return REFUSED;
    };
    match dim_len(a, dim) {
        Some(len) if size >= 1 => Bound {
            bytes: Some(0),
            tensors: (len.max(0) as u64).div_ceil(size as u64).max(1),
        },
        _ => REFUSED,
    }
}

/// `chunk`: views, at most `chunks` of them, and exactly that many of an empty dim.
pub fn chunk(a: &Args) -> Bound {
    let (Ok(chunks), Ok(dim)) = (a.int(1), a.int_or(2, 0)) else {
        return REFUSED;
    };
    match dim_len(a, dim) {
        Some(len) if chunks >= 1 => Bound {
            bytes: Some(0),
            tensors: if len <= 0 {
                chunks as u64
            } else {
                chunks.min(len) as u64
            },
        },
        _ => REFUSED,
    }
}

/// `repeat`: each of the input's dims (1 for the dims `repeats` adds in front) times its count.
pub fn repeat(a: &Args) -> Bound {
    let (Ok(t), Ok(reps)) = (a.t(0), a.ints(1)) else {
        return REFUSED;
    };
    let shape = t.size();
    let Some(extra) = reps.len().checked_sub(shape.len()) else {
        return REFUSED;
    };
    // A negative count is refused, except against an empty dim (which stays empty).
    let out: Option<Vec<i64>> = reps
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let size = if i < extra { 1 } else { shape[i - extra] };
            size.checked_mul(r).map(|d| d.max(0))
        })
        .collect();
    Bound::one(times(out.as_deref().and_then(numel_of), elt(t.kind())))
}

/// `repeat_interleave`: `dim` (or the flattened input) times `repeats`.
pub fn repeat_interleave(a: &Args) -> Bound {
    let (Ok(t), Ok(r), Ok(dim)) = (a.t(0), a.int(1), a.get(2).map(|_| a.int(2)).transpose()) else {
        return REFUSED;
    };
    if r < 0 {
        return REFUSED;
    }
    let mut shape = t.size();
    let out = match dim {
        None => numel_of(&shape)
            .and_then(|n| i64::try_from(n).ok())
            .and_then(|n| n.checked_mul(r))
            .map(|n| vec![n]),
        Some(dim) => match wrap_dim(dim, shape.len()) {
            Some(d) => shape[d].checked_mul(r).map(|n| {
                shape[d] = n;
                shape
            }),
            None if shape.is_empty() => Some(vec![r]),
            None => return REFUSED,
        },
    };
    Bound::one(times(out.as_deref().and_then(numel_of), elt(t.kind())))
}

/// `matmul` by torch.matmul's rules: the output of the broadcast batch, and the copies of the
/// operands that broadcasting a batch or folding a non-contiguous operand makes.
pub fn matmul(a: &Args) -> Bound {
    let (Ok(x), Ok(y)) = (a.ft(0), a.ft(1)) else {
        return REFUSED;
    };
    let (sx, sy) = (x.size(), y.size());
    if sx.is_empty() || sy.is_empty() {
        return REFUSED;
    }
    // A 1-D operand is a row (left) or a column (right); the output drops that 1 again.
    let xs = if sx.len() == 1 {
        vec![1, sx[0]]
    } else {
        sx.clone()
    };
    let ys = if sy.len() == 1 {
        vec![sy[0], 1]
    } else {
        sy.clone()
    };
    let (bx, nk) = xs.split_at(xs.len() - 2);
    let (by, km) = ys.split_at(ys.len() - 2);
    let (n, k, m) = (nk[0], nk[1], km[1]);
    if k != km[0] {
        return REFUSED;
    }
    let Some(batch) = broadcast_pair(bx, by) else {
        return REFUSED;
    };
    let b = numel_of(&batch);
    let out = mul(b, numel_of(&[n, m]));
    let copies = if sx.len() <= 2 && sy.len() <= 2 {
        Some(0)
    } else if sy.len() <= 2 {
        // x folds to [∏ batch·n, k]: a view when contiguous.
        if x.is_contiguous() {
            Some(0)
        } else {
            numel(x)
        }
    } else if sx.len() <= 2 {
        numel(y)
    } else {
        let expanded = |own: &[i64], t: &Tensor, rows: i64, cols: i64| {
            if numel_of(own) == b && t.is_contiguous() {
                Some(0)
            } else {
                mul(b, numel_of(&[rows, cols]))
            }
        };
        plus(expanded(bx, x, n, k), expanded(by, y, k, m))
    };
    Bound::one(times(plus(out, copies), common([x.kind(), y.kind()])))
}

/// `mm`: [n, k] @ [k, m].
pub fn mm(a: &Args) -> Bound {
    let (Ok(x), Ok(y)) = (a.ft(0), a.ft(1)) else {
        return REFUSED;
    };
    let (sx, sy) = (x.size(), y.size());
    if sx.len() != 2 || sy.len() != 2 || sx[1] != sy[0] {
        return REFUSED;
    }
    Bound::one(times(
        numel_of(&[sx[0], sy[1]]),
        common([x.kind(), y.kind()]),
    ))
}

/// `bmm`: [b, n, k] @ [b, k, m].
pub fn bmm(a: &Args) -> Bound {
    let (Ok(x), Ok(y)) = (a.ft(0), a.ft(1)) else {
        return REFUSED;
    };
    let (sx, sy) = (x.size(), y.size());
    if sx.len() != 3 || sy.len() != 3 || sx[0] != sy[0] || sx[2] != sy[1] {
        return REFUSED;
    }
    Bound::one(times(
        numel_of(&[sx[0], sx[1], sy[2]]),
        common([x.kind(), y.kind()]),
    ))
}

/// `linear`: [..., in] · [out, in]ᵀ, and a copy of a non-contiguous input when it is folded.
pub fn linear(a: &Args) -> Bound {
    let (Ok(x), Ok(w)) = (a.ft(0), a.ft(1)) else {
        return REFUSED;
    };
    let (sx, sw) = (x.size(), w.size());
    let Some((&last, rows)) = sx.split_last() else {
        return REFUSED;
    };
    if sw.len() != 2 || sw[1] != last {
        return REFUSED;
    }
    let out = mul(numel_of(rows), numel_of(&[sw[0]]));
    let copy = if x.is_contiguous() { Some(0) } else { numel(x) };
    Bound::one(times(plus(out, copy), common([x.kind(), w.kind()])))
}

/// An einsum equation resolved against its operands' shapes.
pub struct Einsum {
    /// The size of each label (a–z, then A–Z) after broadcasting; -1 where unused.
    sizes: [i64; 52],
    /// The labels of each operand, as bit masks.
    operands: Vec<u64>,
    /// The output's labels.
    out: u64,
    /// The operands' ellipsis dims, broadcast, and whether the output keeps them.
    ellipsis: Vec<i64>,
    out_ellipsis: bool,
}

fn label(c: u8) -> Option<usize> {
    match c {
        b'a'..=b'z' => Some((c - b'a') as usize),
        b'A'..=b'Z' => Some(26 + (c - b'A') as usize),
        _ => None,
    }
}

/// One operand's subscripts: the labels before and after its ellipsis, and whether it has one.
/// Spaces are ignored, as libtorch does.
fn subscripts(spec: &str) -> Option<(Vec<usize>, Vec<usize>, bool)> {
    let bytes = spec.as_bytes();
    let (mut before, mut after, mut ellipsis) = (Vec::new(), Vec::new(), false);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' => i += 1,
            b'.' => {
                if ellipsis || bytes.get(i..i + 3) != Some(&b"..."[..]) {
                    return None;
                }
                ellipsis = true;
                i += 3;
            }
            c => {
                let l = label(c)?;
                if ellipsis {
                    after.push(l);
                } else {
                    before.push(l);
                }
                i += 1;
            }
        }
    }
    Some((before, after, ellipsis))
}

impl Einsum {
    /// `None` when the equation does not fit the shapes (libtorch refuses it too).
    pub fn parse(equation: &str, shapes: &[Vec<i64>]) -> Option<Self> {
        let (lhs, rhs) = match equation.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (equation, None),
        };
        let specs: Vec<&str> = lhs.split(',').collect();
        if specs.len() != shapes.len() {
            return None;
        }
        let mut sizes = [-1i64; 52];
        let mut uses = [0u32; 52];
        let mut operands = Vec::with_capacity(specs.len());
        let mut ellipsis: Vec<i64> = Vec::new();
        let mut any_ellipsis = false;
        for (spec, shape) in specs.iter().zip(shapes) {
            let (before, after, has) = subscripts(spec)?;
            let explicit = before.len() + after.len();
            let spanned = if has {
                shape.len().checked_sub(explicit)?
            } else if shape.len() == explicit {
                0
            } else {
                return None;
            };
            let dims = before
                .iter()
                .zip(shape)
                .chain(after.iter().zip(&shape[before.len() + spanned..]));
            let mut mask = 0u64;
            for (&l, &d) in dims {
                let s = &mut sizes[l];
                *s = match (*s, d) {
                    (-1, d) => d,
                    (s, d) if s == d => s,
                    (1, d) => d,
                    (s, 1) => s,
                    _ => return None,
                };
                mask |= 1 << l;
                uses[l] += 1;
            }
            if has {
                any_ellipsis = true;
                ellipsis = broadcast_pair(&ellipsis, &shape[before.len()..before.len() + spanned])?;
            }
            operands.push(mask);
        }
        let all = operands.iter().fold(0, |m, o| m | o);
        let (out, out_ellipsis) = match rhs {
            Some(rhs) => {
                let (before, after, has) = subscripts(rhs)?;
                let mut out = 0u64;
                for l in before.into_iter().chain(after) {
                    if out & (1 << l) != 0 || all & (1 << l) == 0 {
                        return None;
                    }
                    out |= 1 << l;
                }
                (out, has)
            }
            // Implicit output: the labels used once, and the ellipsis dims.
            None => (
                (0..52).filter(|&l| uses[l] == 1).fold(0, |m, l| m | 1 << l),
                any_ellipsis,
            ),
        };
        Some(Self {
            sizes,
            operands,
            out,
            ellipsis,
            out_ellipsis,
        })
    }

    fn elements(&self, labels: u64, ellipsis: bool) -> Option<u64> {
        let sizes: Vec<i64> = (0..52)
            .filter(|l| labels & (1 << l) != 0)
            .map(|l| self.sizes[l])
            .collect();
        let e = if ellipsis {
            numel_of(&self.ellipsis)
        } else {
            Some(1)
        };
        mul(numel_of(&sizes), e)
    }

    /// Elements of the output, and of the intermediates of a left-to-right contraction: after
    /// operands 0..=j, the labels that a later operand or the output still needs.
    fn allocated(&self) -> Option<u64> {
        let n = self.operands.len();
        let mut total = self.elements(self.out, self.out_ellipsis);
        let mut done = 0u64;
        for j in 0..n.saturating_sub(1) {
            done |= self.operands[j];
            if j == 0 {
                continue;
            }
            let later = self.operands[j + 1..].iter().fold(self.out, |m, o| m | o);
            total = plus(total, self.elements(done & later, true));
        }
        total
    }

    /// `2·∏` every index's size when some index is summed, `∏` when none is.
    pub fn flops(&self) -> f64 {
        let all = self.operands.iter().fold(0, |m, o| m | o);
        let product: f64 = (0..52)
            .filter(|l| all & (1 << l) != 0)
            .map(|l| self.sizes[l] as f64)
            .chain(self.ellipsis.iter().map(|&d| d as f64))
            .product();
        let summed = all & !self.out != 0 || (!self.out_ellipsis && !self.ellipsis.is_empty());
        if summed {
            2.0 * product
        } else {
            product
        }
    }
}

/// `einsum`: the output, the left-to-right intermediates, and a copy of every operand (each
/// pairwise product permutes and folds its operands).
pub fn einsum(a: &Args) -> Bound {
    let (Ok(eq), Ok(ts)) = (a.text_or(0, ""), a.ts(1)) else {
        return REFUSED;
    };
    let shapes: Vec<Vec<i64>> = ts.iter().map(Tensor::size).collect();
    let Some(e) = Einsum::parse(eq, &shapes) else {
        return REFUSED;
    };
    let copies = shapes
        .iter()
        .try_fold(0u64, |n, s| n.checked_add(numel_of(s)?));
    Bound::one(times(
        plus(e.allocated(), copies),
        common(ts.iter().map(Tensor::kind)),
    ))
}

/// `scaled_dot_product_attention`: the output [b, h, t, dv], and what the math path (the
/// fallback on every device) allocates: the scores and their softmax, [b, h, t, s] each in at
/// least f32, and with grouped-query attention k and v repeated to every head.
pub fn attention(a: &Args) -> Bound {
    let (Ok(q), Ok(k), Ok(v), Ok(gqa)) = (a.t(0), a.t(1), a.t(2), a.flag_or(5, false)) else {
        return REFUSED;
    };
    let (sq, sk, sv) = (q.size(), k.size(), v.size());
    if sq.len() != 4 || sk.len() != 4 || sv.len() != 4 {
        return REFUSED;
    }
    let b = sq[0].max(sk[0]).max(sv[0]);
    let h = sq[1].max(sk[1]).max(sv[1]);
    let (t, d, s, dv) = (sq[2], sq[3], sk[2], sv[3]);
    let e = common([q.kind(), k.kind(), v.kind()]);
    let out = times(numel_of(&[b, h, t, dv]), e);
    let scores = times(numel_of(&[b, h, t, s]), 2 * e.max(4));
    let repeated = if gqa {
        times(
            mul(numel_of(&[b, h, s]), plus(numel_of(&[d]), numel_of(&[dv]))),
            e,
        )
    } else {
        Some(0)
    };
    Bound::one(plus(plus(out, scores), repeated))
}

/// `cross_entropy`: the log-softmax of the logits (twice with label smoothing) and one loss
/// per label, or one in all (a mean over no labels is still one NaN).
pub fn cross_entropy(a: &Args) -> Bound {
    let (Ok(logits), Ok(labels)) = (a.t(0), a.t(1)) else {
        return REFUSED;
    };
    let temps = times(numel(logits), 2 * widened(logits.kind()));
    let losses = times(numel(labels), 8);
    Bound::one(plus(temps, losses))
}

/// `softmax` and `log_softmax`: the input's shape, in the dtype of argument 2 if given.
pub fn softmax(a: &Args) -> Bound {
    let (Ok(t), Ok(kind)) = (a.t(0), a.opt_dtype(2)) else {
        return REFUSED;
    };
    Bound::one(times(numel(t), elt(kind.unwrap_or(t.kind()))))
}

/// `autograd_grad`: one gradient per input, shaped like it.
pub fn gradients(a: &Args) -> Bound {
    let Ok(inputs) = a.ts(1) else { return REFUSED };
    let bytes = inputs
        .iter()
        .try_fold(0u64, |n, t| n.checked_add(times(numel(t), elt(t.kind()))?));
    Bound {
        bytes,
        tensors: inputs.len() as u64,
    }
}
