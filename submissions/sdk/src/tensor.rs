//! [`Tensor`], the registry's ops as its methods, and [`Op`], a registry op with its id cached.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::bindings::crusades::submission::tensors as raw;
use crate::{Dtype, Error, Result};

/// One argument of a registry op: the contract's `arg` variant. Build it with `From`
/// (`&Tensor`, `i64`, `f64`, `bool`, [`Dtype`], `&str`, `&[i64]`, `Vec<i64>`), with
/// [`Arg::tensors`], or use `Arg::None` for an optional parameter left out.
pub use raw::Arg;

/// A tensor on the host. Dropping it releases the host's handle.
#[repr(transparent)]
pub struct Tensor(pub(crate) raw::Tensor);

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor(#{})", self.0.handle())
    }
}

impl<'a> From<&'a Tensor> for Arg<'a> {
    fn from(t: &'a Tensor) -> Self {
        Arg::Tensor(&t.0)
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Float(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Boolean(v)
    }
}
impl From<Dtype> for Arg<'_> {
    fn from(v: Dtype) -> Self {
        Arg::Dtype(v)
    }
}
impl From<&str> for Arg<'_> {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_string())
    }
}
impl From<&[i64]> for Arg<'_> {
    fn from(v: &[i64]) -> Self {
        Arg::Ints(v.to_vec())
    }
}
impl From<Vec<i64>> for Arg<'_> {
    fn from(v: Vec<i64>) -> Self {
        Arg::Ints(v)
    }
}
impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::None, Into::into)
    }
}

impl<'a> Arg<'a> {
    /// A list of tensors.
    pub fn tensors(ts: &[&'a Tensor]) -> Self {
        Arg::Tensors(ts.iter().map(|t| &t.0).collect())
    }
}

/// A tensor operand or a scalar (the registry's `tensor|float` parameters).
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    Tensor(&'a Tensor),
    Scalar(f64),
}

impl<'a> From<&'a Tensor> for Operand<'a> {
    fn from(t: &'a Tensor) -> Self {
        Operand::Tensor(t)
    }
}
impl From<f64> for Operand<'_> {
    fn from(v: f64) -> Self {
        Operand::Scalar(v)
    }
}
impl From<f32> for Operand<'_> {
    fn from(v: f32) -> Self {
        Operand::Scalar(v as f64)
    }
}
impl From<i32> for Operand<'_> {
    fn from(v: i32) -> Self {
        Operand::Scalar(v as f64)
    }
}

impl<'a> From<Operand<'a>> for Arg<'a> {
    fn from(o: Operand<'a>) -> Self {
        match o {
            Operand::Tensor(t) => Arg::Tensor(&t.0),
            Operand::Scalar(s) => Arg::Float(s),
        }
    }
}

const UNRESOLVED: u32 = u32::MAX;

/// A registry op by name, its id resolved on first use and cached. Declare one as a static:
/// `static EINSUM: Op = Op::new("einsum");`.
pub struct Op {
    name: &'static str,
    id: AtomicU32,
}

impl Op {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            id: AtomicU32::new(UNRESOLVED),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The registry id (one host call the first time, a load afterwards).
    #[inline]
    pub fn id(&self) -> Result<u32> {
        let id = self.id.load(Ordering::Relaxed);
        if id != UNRESOLVED {
            return Ok(id);
        }
        self.resolve()
    }

    #[cold]
    #[inline(never)]
    fn resolve(&self) -> Result<u32> {
        let id = raw::op(self.name)?;
        if id != UNRESOLVED {
            self.id.store(id, Ordering::Relaxed);
        }
        Ok(id)
    }

    /// Runs the op; its outputs, however many.
    #[inline]
    pub fn call(&self, args: &[Arg<'_>]) -> Result<Vec<Tensor>> {
        let out = raw::call(self.id()?, args)?;
        Ok(out.into_iter().map(Tensor).collect())
    }

    /// Runs an op that returns nothing (in-place ops, `backward`).
    #[inline]
    pub fn call0(&self, args: &[Arg<'_>]) -> Result<()> {
        let out = raw::call(self.id()?, args)?;
        if !out.is_empty() {
            return Err(self.arity(out.len(), 0));
        }
        Ok(())
    }

    /// Runs an op that returns one tensor.
    #[inline]
    pub fn call1(&self, args: &[Arg<'_>]) -> Result<Tensor> {
        let mut out = raw::call(self.id()?, args)?;
        match (out.pop(), out.is_empty()) {
            (Some(t), true) => Ok(Tensor(t)),
            _ => Err(self.arity(out.len() + 1, 1)),
        }
    }

    /// Runs an op that returns two tensors (`topk`, `sort`, `max_dim`).
    #[inline]
    pub fn call2(&self, args: &[Arg<'_>]) -> Result<(Tensor, Tensor)> {
        let out = raw::call(self.id()?, args)?;
        let n = out.len();
        let mut it = out.into_iter();
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), None) => Ok((Tensor(a), Tensor(b))),
            _ => Err(self.arity(n, 2)),
        }
    }

    #[cold]
    fn arity(&self, got: usize, want: usize) -> Error {
        Error::guest(format!(
            "op {} returned {got} tensors, expected {want}",
            self.name
        ))
    }
}

macro_rules! registry_ops {
    ($($ident:ident = $name:literal,)*) => {
        /// Every registry op the SDK calls, one cached [`Op`](crate::Op) each.
        pub mod ops {
            use crate::Op;
            $(pub static $ident: Op = Op::new($name);)*
            /// All of the above, for checks against the registry.
            pub static ALL: &[&Op] = &[$(&$ident),*];
        }
    };
}

registry_ops! {
    ZEROS = "zeros", ONES = "ones", FULL = "full", ARANGE = "arange", EYE = "eye",
    ZEROS_LIKE = "zeros_like", ONES_LIKE = "ones_like", FULL_LIKE = "full_like",
    TO_DTYPE = "to_dtype", COPY = "copy", COPY_ = "copy_", CONTIGUOUS = "contiguous",
    DETACH = "detach", DETACH_ = "detach_",
    ADD = "add", SUB = "sub", MUL = "mul", DIV = "div", POW = "pow",
    MAXIMUM = "maximum", MINIMUM = "minimum",
    ADD_ = "add_", SUB_ = "sub_", MUL_ = "mul_", DIV_ = "div_",
    EQ = "eq", NE = "ne", LT = "lt", LE = "le", GT = "gt", GE = "ge",
    LOGICAL_AND = "logical_and", LOGICAL_OR = "logical_or", WHERE = "where",
    MASKED_FILL = "masked_fill",
    NEG = "neg", ABS = "abs", SIGN = "sign", SQRT = "sqrt", RSQRT = "rsqrt", EXP = "exp",
    LOG = "log", SIN = "sin", COS = "cos", TANH = "tanh", SIGMOID = "sigmoid", SILU = "silu",
    RELU = "relu", GELU = "gelu", ROUND = "round", FLOOR = "floor", CEIL = "ceil",
    RECIPROCAL = "reciprocal", SQUARE = "square", ISFINITE = "isfinite", ISNAN = "isnan",
    LOGICAL_NOT = "logical_not", CLAMP = "clamp",
    NEG_ = "neg_", SIGN_ = "sign_", ZERO_ = "zero_", FILL_ = "fill_", CLAMP_ = "clamp_",
    SUM = "sum", MEAN = "mean", AMAX = "amax", AMIN = "amin", MAX = "max", MIN = "min",
    MAX_DIM = "max_dim", ARGMAX = "argmax", NORM = "norm", LOGSUMEXP = "logsumexp",
    CUMSUM = "cumsum", TOPK = "topk", SORT = "sort", ARGSORT = "argsort", GATHER = "gather",
    INDEX_SELECT = "index_select", SCATTER = "scatter", SCATTER_ADD = "scatter_add",
    SCATTER_ADD_ = "scatter_add_", SCATTER_REDUCE = "scatter_reduce", EMBEDDING = "embedding",
    RESHAPE = "reshape", VIEW = "view", PERMUTE = "permute", TRANSPOSE = "transpose",
    FLATTEN = "flatten", UNSQUEEZE = "unsqueeze", SQUEEZE = "squeeze", EXPAND = "expand",
    NARROW = "narrow", SLICE = "slice", SELECT = "select", CAT = "cat", STACK = "stack",
    SPLIT = "split", CHUNK = "chunk", REPEAT = "repeat", REPEAT_INTERLEAVE = "repeat_interleave",
    TRIL = "tril", TRIU = "triu",
    MATMUL = "matmul", MM = "mm", BMM = "bmm", LINEAR = "linear", EINSUM = "einsum",
    RMS_NORM = "rms_norm", LAYER_NORM = "layer_norm", SOFTMAX = "softmax",
    LOG_SOFTMAX = "log_softmax", CROSS_ENTROPY = "cross_entropy",
    SCALED_DOT_PRODUCT_ATTENTION = "scaled_dot_product_attention",
    REQUIRES_GRAD_ = "requires_grad_", BACKWARD = "backward", AUTOGRAD_GRAD = "autograd_grad",
    GRAD = "grad", ZERO_GRAD = "zero_grad", NO_GRAD_ENTER = "no_grad_enter",
    NO_GRAD_EXIT = "no_grad_exit", NOOP = "noop",
}

use ops::*;

/// The empty op: one host round trip, for measuring the cost of a call.
#[inline]
pub fn noop() -> Result<()> {
    NOOP.call0(&[])
}

#[inline]
fn t(x: &Tensor) -> Arg<'_> {
    Arg::Tensor(&x.0)
}

fn ints(v: &[i64]) -> Arg<'static> {
    Arg::Ints(v.to_vec())
}

fn opt_f(v: Option<f64>) -> Arg<'static> {
    v.map_or(Arg::None, Arg::Float)
}

fn opt_dtype(v: Option<Dtype>) -> Arg<'static> {
    v.map_or(Arg::None, Arg::Dtype)
}

/// Creation, metadata and host transfers.
impl Tensor {
    /// An f32 tensor of `shape` from guest data.
    pub fn from_f32(data: &[f32], shape: &[i64]) -> Result<Tensor> {
        Ok(Tensor(raw::from_f32(data, shape)?))
    }

    /// An i64 tensor of `shape` from guest data.
    pub fn from_i64(data: &[i64], shape: &[i64]) -> Result<Tensor> {
        Ok(Tensor(raw::from_i64(data, shape)?))
    }

    pub fn zeros(shape: &[i64], dtype: Dtype) -> Result<Tensor> {
        ZEROS.call1(&[ints(shape), Arg::Dtype(dtype)])
    }

    pub fn ones(shape: &[i64], dtype: Dtype) -> Result<Tensor> {
        ONES.call1(&[ints(shape), Arg::Dtype(dtype)])
    }

    pub fn full(shape: &[i64], value: f64, dtype: Dtype) -> Result<Tensor> {
        FULL.call1(&[ints(shape), Arg::Float(value), Arg::Dtype(dtype)])
    }

    /// `0..end`.
    pub fn arange(end: i64, dtype: Dtype) -> Result<Tensor> {
        ARANGE.call1(&[Arg::Int(end), Arg::Dtype(dtype)])
    }

    pub fn eye(n: i64, dtype: Dtype) -> Result<Tensor> {
        EYE.call1(&[Arg::Int(n), Arg::Dtype(dtype)])
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        ZEROS_LIKE.call1(&[t(self)])
    }

    pub fn ones_like(&self) -> Result<Tensor> {
        ONES_LIKE.call1(&[t(self)])
    }

    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        FULL_LIKE.call1(&[t(self), Arg::Float(value)])
    }

    pub fn shape(&self) -> Vec<i64> {
        self.0.shape()
    }

    pub fn dtype(&self) -> Dtype {
        self.0.dtype()
    }

    pub fn dim(&self) -> usize {
        self.shape().len()
    }

    pub fn numel(&self) -> i64 {
        self.shape().iter().product()
    }

    /// The value of a one-element tensor (waits for the device).
    pub fn item(&self) -> Result<f64> {
        raw::item(&self.0)
    }

    pub fn to_dtype(&self, dtype: Dtype) -> Result<Tensor> {
        TO_DTYPE.call1(&[t(self), Arg::Dtype(dtype)])
    }

    /// A new tensor with the same values, outside autograd.
    pub fn copy(&self) -> Result<Tensor> {
        COPY.call1(&[t(self)])
    }

    /// `self ← src` in place (src broadcasts).
    pub fn copy_(&self, src: &Tensor) -> Result<()> {
        COPY_.call0(&[t(self), t(src)])
    }

    pub fn contiguous(&self) -> Result<Tensor> {
        CONTIGUOUS.call1(&[t(self)])
    }

    pub fn detach(&self) -> Result<Tensor> {
        DETACH.call1(&[t(self)])
    }

    pub fn detach_(&self) -> Result<()> {
        DETACH_.call0(&[t(self)])
    }
}

macro_rules! binary {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name<'a>(&self, other: impl Into<Operand<'a>>) -> Result<Tensor> {
                $op.call1(&[t(self), other.into().into()])
            }
        )*
    };
}

macro_rules! binary_ {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name<'a>(&self, other: impl Into<Operand<'a>>) -> Result<()> {
                $op.call0(&[t(self), other.into().into()])
            }
        )*
    };
}

macro_rules! unary {
    ($($name:ident => $op:ident;)*) => {
        $(
            pub fn $name(&self) -> Result<Tensor> {
                $op.call1(&[t(self)])
            }
        )*
    };
}

macro_rules! unary_ {
    ($($name:ident => $op:ident;)*) => {
        $(
            pub fn $name(&self) -> Result<()> {
                $op.call0(&[t(self)])
            }
        )*
    };
}

/// Elementwise ops. Binary ones take a tensor (broadcasting) or a scalar.
#[allow(clippy::should_implement_trait)]
impl Tensor {
    binary! {
        add => ADD;
        sub => SUB;
        mul => MUL;
        div => DIV;
        pow => POW;
        eq => EQ;
        ne => NE;
        lt => LT;
        le => LE;
        gt => GT;
        ge => GE;
    }

    binary_! {
        /// `self += other`.
        add_ => ADD_;
        /// `self -= other`.
        sub_ => SUB_;
        /// `self *= other`.
        mul_ => MUL_;
        /// `self /= other`.
        div_ => DIV_;
    }

    unary! {
        neg => NEG;
        abs => ABS;
        sign => SIGN;
        sqrt => SQRT;
        rsqrt => RSQRT;
        exp => EXP;
        log => LOG;
        sin => SIN;
        cos => COS;
        tanh => TANH;
        sigmoid => SIGMOID;
        silu => SILU;
        relu => RELU;
        round => ROUND;
        floor => FLOOR;
        ceil => CEIL;
        reciprocal => RECIPROCAL;
        square => SQUARE;
        isfinite => ISFINITE;
        isnan => ISNAN;
        logical_not => LOGICAL_NOT;
    }

    unary_! {
        neg_ => NEG_;
        sign_ => SIGN_;
        zero_ => ZERO_;
    }

    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        MAXIMUM.call1(&[t(self), t(other)])
    }

    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        MINIMUM.call1(&[t(self), t(other)])
    }

    pub fn logical_and(&self, other: &Tensor) -> Result<Tensor> {
        LOGICAL_AND.call1(&[t(self), t(other)])
    }

    pub fn logical_or(&self, other: &Tensor) -> Result<Tensor> {
        LOGICAL_OR.call1(&[t(self), t(other)])
    }

    /// `where(cond, self, other)`: `self` where `cond` (bool) holds, else `other`.
    pub fn where_self<'a>(&self, cond: &Tensor, other: impl Into<Operand<'a>>) -> Result<Tensor> {
        WHERE.call1(&[t(cond), t(self), other.into().into()])
    }

    /// `value` where `mask` holds, else `self`.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        MASKED_FILL.call1(&[t(self), t(mask), Arg::Float(value)])
    }

    /// `gelu`, `approximate` = "none" or "tanh".
    pub fn gelu(&self, approximate: &str) -> Result<Tensor> {
        GELU.call1(&[t(self), Arg::Text(approximate.to_string())])
    }

    /// Clamp to `[min, max]`; at least one bound must be given.
    pub fn clamp(&self, min: Option<f64>, max: Option<f64>) -> Result<Tensor> {
        CLAMP.call1(&[t(self), opt_f(min), opt_f(max)])
    }

    pub fn clamp_min(&self, min: f64) -> Result<Tensor> {
        self.clamp(Some(min), None)
    }

    pub fn clamp_max(&self, max: f64) -> Result<Tensor> {
        self.clamp(None, Some(max))
    }

    pub fn clamp_(&self, min: Option<f64>, max: Option<f64>) -> Result<()> {
        CLAMP_.call0(&[t(self), opt_f(min), opt_f(max)])
    }

    pub fn fill_(&self, value: f64) -> Result<()> {
        FILL_.call0(&[t(self), Arg::Float(value)])
    }
}

/// Reductions, selection, gather and scatter.
impl Tensor {
    /// The sum of every element (in `dtype` if given).
    pub fn sum(&self, dtype: Option<Dtype>) -> Result<Tensor> {
        SUM.call1(&[t(self), Arg::None, Arg::None, opt_dtype(dtype)])
    }

    pub fn sum_dims(&self, dims: &[i64], keepdim: bool, dtype: Option<Dtype>) -> Result<Tensor> {
        SUM.call1(&[t(self), ints(dims), Arg::Boolean(keepdim), opt_dtype(dtype)])
    }

    /// The mean of every element (accumulated and returned in `dtype` if given).
    pub fn mean(&self, dtype: Option<Dtype>) -> Result<Tensor> {
        MEAN.call1(&[t(self), Arg::None, Arg::None, opt_dtype(dtype)])
    }

    pub fn mean_dims(&self, dims: &[i64], keepdim: bool, dtype: Option<Dtype>) -> Result<Tensor> {
        MEAN.call1(&[t(self), ints(dims), Arg::Boolean(keepdim), opt_dtype(dtype)])
    }

    pub fn amax(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        AMAX.call1(&[t(self), ints(dims), Arg::Boolean(keepdim)])
    }

    pub fn amin(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        AMIN.call1(&[t(self), ints(dims), Arg::Boolean(keepdim)])
    }

    /// The largest element.
    pub fn max(&self) -> Result<Tensor> {
        MAX.call1(&[t(self)])
    }

    /// The smallest element.
    pub fn min(&self) -> Result<Tensor> {
        MIN.call1(&[t(self)])
    }

    /// (values, indices) of the maximum along `dim`.
    pub fn max_dim(&self, dim: i64, keepdim: bool) -> Result<(Tensor, Tensor)> {
        MAX_DIM.call2(&[t(self), Arg::Int(dim), Arg::Boolean(keepdim)])
    }

    /// Index of the maximum along `dim`, or over the flattened tensor.
    pub fn argmax(&self, dim: Option<i64>, keepdim: bool) -> Result<Tensor> {
        ARGMAX.call1(&[t(self), dim.into(), Arg::Boolean(keepdim)])
    }

    /// The L2 norm of every element (libtorch's `norm()`).
    pub fn norm(&self) -> Result<Tensor> {
        NORM.call1(&[t(self)])
    }

    /// The p-norm of every element.
    pub fn norm_p(&self, p: f64) -> Result<Tensor> {
        NORM.call1(&[t(self), Arg::Float(p)])
    }

    /// The p-norm along `dims` (libtorch's `norm(p, dims, keepdim)`).
    pub fn norm_dims(&self, p: f64, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        NORM.call1(&[t(self), Arg::Float(p), ints(dims), Arg::Boolean(keepdim)])
    }

    pub fn logsumexp(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        LOGSUMEXP.call1(&[t(self), ints(dims), Arg::Boolean(keepdim)])
    }

    pub fn cumsum(&self, dim: i64) -> Result<Tensor> {
        CUMSUM.call1(&[t(self), Arg::Int(dim)])
    }

    /// (values, indices) of the `k` largest (or smallest) entries along `dim`.
    pub fn topk(&self, k: i64, dim: i64, largest: bool, sorted: bool) -> Result<(Tensor, Tensor)> {
        TOPK.call2(&[
            t(self),
            Arg::Int(k),
            Arg::Int(dim),
            Arg::Boolean(largest),
            Arg::Boolean(sorted),
        ])
    }

    /// (values, indices) sorted along `dim`.
    pub fn sort(&self, dim: i64, descending: bool) -> Result<(Tensor, Tensor)> {
        SORT.call2(&[t(self), Arg::Int(dim), Arg::Boolean(descending)])
    }

    pub fn argsort(&self, dim: i64, descending: bool) -> Result<Tensor> {
        ARGSORT.call1(&[t(self), Arg::Int(dim), Arg::Boolean(descending)])
    }

    pub fn gather(&self, dim: i64, index: &Tensor) -> Result<Tensor> {
        GATHER.call1(&[t(self), Arg::Int(dim), t(index)])
    }

    pub fn index_select(&self, dim: i64, index: &Tensor) -> Result<Tensor> {
        INDEX_SELECT.call1(&[t(self), Arg::Int(dim), t(index)])
    }

    pub fn scatter(&self, dim: i64, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        SCATTER.call1(&[t(self), Arg::Int(dim), t(index), t(src)])
    }

    pub fn scatter_add(&self, dim: i64, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        SCATTER_ADD.call1(&[t(self), Arg::Int(dim), t(index), t(src)])
    }

    pub fn scatter_add_(&self, dim: i64, index: &Tensor, src: &Tensor) -> Result<()> {
        SCATTER_ADD_.call0(&[t(self), Arg::Int(dim), t(index), t(src)])
    }

    /// `reduce` = "sum" or "mean"; `include_self` counts `self`'s values in the reduction.
    pub fn scatter_reduce(
        &self,
        dim: i64,
        index: &Tensor,
        src: &Tensor,
        reduce: &str,
        include_self: bool,
    ) -> Result<Tensor> {
        SCATTER_REDUCE.call1(&[
            t(self),
            Arg::Int(dim),
            t(index),
            t(src),
            Arg::Text(reduce.to_string()),
            Arg::Boolean(include_self),
        ])
    }

    /// Rows of `weight` (2-D) at `indices` (i64).
    pub fn embedding(weight: &Tensor, indices: &Tensor) -> Result<Tensor> {
        EMBEDDING.call1(&[t(weight), t(indices)])
    }
}

/// Shapes.
impl Tensor {
    pub fn reshape(&self, shape: &[i64]) -> Result<Tensor> {
        RESHAPE.call1(&[t(self), ints(shape)])
    }

    pub fn view(&self, shape: &[i64]) -> Result<Tensor> {
        VIEW.call1(&[t(self), ints(shape)])
    }

    pub fn permute(&self, dims: &[i64]) -> Result<Tensor> {
        PERMUTE.call1(&[t(self), ints(dims)])
    }

    pub fn transpose(&self, dim0: i64, dim1: i64) -> Result<Tensor> {
        TRANSPOSE.call1(&[t(self), Arg::Int(dim0), Arg::Int(dim1)])
    }

    pub fn flatten(&self, start: i64, end: i64) -> Result<Tensor> {
        FLATTEN.call1(&[t(self), Arg::Int(start), Arg::Int(end)])
    }

    pub fn unsqueeze(&self, dim: i64) -> Result<Tensor> {
        UNSQUEEZE.call1(&[t(self), Arg::Int(dim)])
    }

    /// Drops every size-1 dimension.
    pub fn squeeze(&self) -> Result<Tensor> {
        SQUEEZE.call1(&[t(self)])
    }

    pub fn squeeze_dim(&self, dim: i64) -> Result<Tensor> {
        SQUEEZE.call1(&[t(self), Arg::Int(dim)])
    }

    pub fn expand(&self, shape: &[i64]) -> Result<Tensor> {
        EXPAND.call1(&[t(self), ints(shape)])
    }

    pub fn narrow(&self, dim: i64, start: i64, length: i64) -> Result<Tensor> {
        NARROW.call1(&[t(self), Arg::Int(dim), Arg::Int(start), Arg::Int(length)])
    }

    pub fn slice(
        &self,
        dim: i64,
        start: Option<i64>,
        end: Option<i64>,
        step: i64,
    ) -> Result<Tensor> {
        SLICE.call1(&[
            t(self),
            Arg::Int(dim),
            start.into(),
            end.into(),
            Arg::Int(step),
        ])
    }

    pub fn select(&self, dim: i64, index: i64) -> Result<Tensor> {
        SELECT.call1(&[t(self), Arg::Int(dim), Arg::Int(index)])
    }

    pub fn cat(tensors: &[&Tensor], dim: i64) -> Result<Tensor> {
        CAT.call1(&[Arg::tensors(tensors), Arg::Int(dim)])
    }

    pub fn stack(tensors: &[&Tensor], dim: i64) -> Result<Tensor> {
        STACK.call1(&[Arg::tensors(tensors), Arg::Int(dim)])
    }

    /// Pieces of `size` along `dim` (the last may be shorter).
    pub fn split(&self, size: i64, dim: i64) -> Result<Vec<Tensor>> {
        SPLIT.call(&[t(self), Arg::Int(size), Arg::Int(dim)])
    }

    /// `chunks` pieces along `dim`.
    pub fn chunk(&self, chunks: i64, dim: i64) -> Result<Vec<Tensor>> {
        CHUNK.call(&[t(self), Arg::Int(chunks), Arg::Int(dim)])
    }

    pub fn repeat(&self, repeats: &[i64]) -> Result<Tensor> {
        REPEAT.call1(&[t(self), ints(repeats)])
    }

    /// Each slice along `dim` repeated `repeats` times in place (GQA's key/value expansion).
    pub fn repeat_interleave(&self, repeats: i64, dim: i64) -> Result<Tensor> {
        REPEAT_INTERLEAVE.call1(&[t(self), Arg::Int(repeats), Arg::Int(dim)])
    }

    pub fn tril(&self, diagonal: i64) -> Result<Tensor> {
        TRIL.call1(&[t(self), Arg::Int(diagonal)])
    }

    pub fn triu(&self, diagonal: i64) -> Result<Tensor> {
        TRIU.call1(&[t(self), Arg::Int(diagonal)])
    }
}

/// Products and neural-network ops.
impl Tensor {
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        MATMUL.call1(&[t(self), t(other)])
    }

    pub fn mm(&self, other: &Tensor) -> Result<Tensor> {
        MM.call1(&[t(self), t(other)])
    }

    pub fn bmm(&self, other: &Tensor) -> Result<Tensor> {
        BMM.call1(&[t(self), t(other)])
    }

    /// `self · weightᵀ (+ bias)`, weight `[out, in]`.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        LINEAR.call1(&[t(self), t(weight), bias.into()])
    }

    pub fn einsum(equation: &str, tensors: &[&Tensor]) -> Result<Tensor> {
        EINSUM.call1(&[Arg::Text(equation.to_string()), Arg::tensors(tensors)])
    }

    pub fn rms_norm(
        &self,
        normalized_shape: &[i64],
        weight: Option<&Tensor>,
        eps: Option<f64>,
    ) -> Result<Tensor> {
        RMS_NORM.call1(&[t(self), ints(normalized_shape), weight.into(), opt_f(eps)])
    }

    pub fn layer_norm(
        &self,
        normalized_shape: &[i64],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        LAYER_NORM.call1(&[
            t(self),
            ints(normalized_shape),
            weight.into(),
            bias.into(),
            Arg::Float(eps),
        ])
    }

    pub fn softmax(&self, dim: i64, dtype: Option<Dtype>) -> Result<Tensor> {
        SOFTMAX.call1(&[t(self), Arg::Int(dim), opt_dtype(dtype)])
    }

    pub fn log_softmax(&self, dim: i64, dtype: Option<Dtype>) -> Result<Tensor> {
        LOG_SOFTMAX.call1(&[t(self), Arg::Int(dim), opt_dtype(dtype)])
    }

    /// Cross-entropy of logits `[n, classes]` against i64 labels `[n]`, with `reduction`
    /// "mean", "sum" or "none", ignore index -100 and no label smoothing.
    pub fn cross_entropy(&self, labels: &Tensor, reduction: &str) -> Result<Tensor> {
        CROSS_ENTROPY.call1(&[
            t(self),
            t(labels),
            Arg::Text(reduction.to_string()),
            Arg::Int(-100),
            Arg::Float(0.0),
        ])
    }

    /// Attention over `[batch, heads, seq, head_dim]` q, k, v; `scale` defaults to 1/√d.
    pub fn scaled_dot_product_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        is_causal: bool,
        scale: Option<f64>,
        enable_gqa: bool,
    ) -> Result<Tensor> {
        SCALED_DOT_PRODUCT_ATTENTION.call1(&[
            t(q),
            t(k),
            t(v),
            Arg::Boolean(is_causal),
            opt_f(scale),
            Arg::Boolean(enable_gqa),
        ])
    }
}

/// Autograd.
impl Tensor {
    pub fn requires_grad_(&self, requires_grad: bool) -> Result<()> {
        REQUIRES_GRAD_.call0(&[t(self), Arg::Boolean(requires_grad)])
    }

    /// Accumulates the gradient of this one-element loss into the leaves' `.grad`.
    pub fn backward(&self) -> Result<()> {
        BACKWARD.call0(&[t(self)])
    }

    /// The gradients of `outputs` with respect to `inputs`, not accumulated into `.grad`
    /// (libtorch's `run_backward`).
    pub fn autograd_grad(
        outputs: &[&Tensor],
        inputs: &[&Tensor],
        retain_graph: bool,
    ) -> Result<Vec<Tensor>> {
        AUTOGRAD_GRAD.call(&[
            Arg::tensors(outputs),
            Arg::tensors(inputs),
            Arg::Boolean(retain_graph),
        ])
    }

    pub fn grad(&self) -> Result<Tensor> {
        GRAD.call1(&[t(self)])
    }

    pub fn zero_grad(&self) -> Result<()> {
        ZERO_GRAD.call0(&[t(self)])
    }
}

// Operators: `&a + &b`, `&a * 2.0`, `-&a`, on owned tensors too. Each is one op call, so
// each gives a `Result`; chain with `?`: `((&a + &b)? * 0.5)?`.
macro_rules! operator {
    ($($trait:ident $method:ident;)*) => {
        $(
            impl std::ops::$trait<&Tensor> for &Tensor {
                type Output = Result<Tensor>;
                fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                    Tensor::$method(self, rhs)
                }
            }
            impl std::ops::$trait<Tensor> for &Tensor {
                type Output = Result<Tensor>;
                fn $method(self, rhs: Tensor) -> Result<Tensor> {
                    Tensor::$method(self, &rhs)
                }
            }
            impl std::ops::$trait<&Tensor> for Tensor {
                type Output = Result<Tensor>;
                fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                    Tensor::$method(&self, rhs)
                }
            }
            impl std::ops::$trait<Tensor> for Tensor {
                type Output = Result<Tensor>;
                fn $method(self, rhs: Tensor) -> Result<Tensor> {
                    Tensor::$method(&self, &rhs)
                }
            }
            impl std::ops::$trait<f64> for &Tensor {
                type Output = Result<Tensor>;
                fn $method(self, rhs: f64) -> Result<Tensor> {
                    Tensor::$method(self, rhs)
                }
            }
            impl std::ops::$trait<f64> for Tensor {
                type Output = Result<Tensor>;
                fn $method(self, rhs: f64) -> Result<Tensor> {
                    Tensor::$method(&self, rhs)
                }
            }
        )*
    };
}

operator! {
    Add add;
    Sub sub;
    Mul mul;
    Div div;
}

impl std::ops::Neg for &Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(self)
    }
}

impl std::ops::Neg for Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::ops;

    /// The registry's op names, read from the host's source (`sandbox/src/registry.rs`).
    fn registry_names() -> Option<Vec<String>> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sandbox/src/registry.rs");
        let src = std::fs::read_to_string(path).ok()?;
        Some(
            // `op!(` then the quoted name, with whatever whitespace rustfmt puts between.
            src.match_indices("op!(")
                .filter_map(|(i, m)| {
                    let rest = src[i + m.len()..].trim_start().strip_prefix('"')?;
                    rest.find('"').map(|end| rest[..end].to_string())
                })
                .collect(),
        )
    }

    #[test]
    fn every_op_the_sdk_calls_is_in_the_registry() {
        let Some(names) = registry_names() else {
            eprintln!("sandbox/src/registry.rs is not there; skipping");
            return;
        };
        assert!(
            names.len() > 100,
            "parsed only {} registry ops",
            names.len()
        );
        let missing: Vec<&str> = ops::ALL
            .iter()
            .map(|op| op.name())
            .filter(|n| !names.iter().any(|r| r == n))
            .collect();
        assert!(missing.is_empty(), "not in the registry: {missing:?}");
        let unwrapped: Vec<&String> = names
            .iter()
            .filter(|r| !ops::ALL.iter().any(|op| op.name() == r.as_str()))
            .collect();
        assert!(
            unwrapped.is_empty(),
            "registry ops without a wrapper: {unwrapped:?}"
        );
    }
}
