//! The op registry: every tensor op a submission can call, each one entry with its name, its
//! parameters (checked before it runs), its FLOP formula, a bound on what it allocates (checked
//! against the limits before it runs, `bound.rs`) and its executor over tch.
//!
//! Adding an op is adding one [`Op`] to [`REGISTRY`]. Executors call only the fallible `f_`
//! forms of tch, and for the ops that pass libtorch a scalar the wrappers in `scalar.rs` (tch's
//! own panic when libtorch refuses the call), so whatever a guest hands in, libtorch's refusal
//! becomes an [`OpError`] and never a panic; tests/fuzz_registry.rs holds them to it. Creation
//! ops take the run's device from [`Ctx`]; a guest cannot name one.

use std::fmt;

use tch::{Device, Kind, Reduction, Tensor};

mod bound;
mod scalar;
pub use bound::{numel_of as charged_elements, Alloc, Bound};

/// Why an op refused to run. Mirrors the contract's `error-code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    UnknownOp,
    BadArguments,
    ShapeMismatch,
    WrongDtype,
    OpFailed,
    Protocol,
    Guest,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::UnknownOp => "unknown-op",
            Code::BadArguments => "bad-arguments",
            Code::ShapeMismatch => "shape-mismatch",
            Code::WrongDtype => "wrong-dtype",
            Code::OpFailed => "op-failed",
            Code::Protocol => "protocol",
            Code::Guest => "guest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub code: Code,
    pub message: String,
}

impl OpError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

impl From<tch::TchError> for OpError {
    fn from(e: tch::TchError) -> Self {
        OpError::new(
            Code::OpFailed,
            crusades_reference::error::trim_torch_message(&e.to_string()),
        )
    }
}

pub type OpResult<T> = Result<T, OpError>;

fn bad(message: impl Into<String>) -> OpError {
    OpError::new(Code::BadArguments, message)
}

/// One argument, as the host sees it after resolving the guest's handles.
pub enum Value {
    Tensor(Tensor),
    Tensors(Vec<Tensor>),
    Int(i64),
    Ints(Vec<i64>),
    Float(f64),
    Bool(bool),
    Dtype(Kind),
    Text(String),
    None,
}

impl Value {
    fn kind_name(&self) -> &'static str {
        match self {
            Value::Tensor(_) => "a tensor",
            Value::Tensors(_) => "a list of tensors",
            Value::Int(_) => "an int",
            Value::Ints(_) => "a list of ints",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::Dtype(_) => "a dtype",
            Value::Text(_) => "text",
            Value::None => "none",
        }
    }
}

/// The kind a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Tensor,
    Tensors,
    Int,
    Ints,
    Float,
    Bool,
    Dtype,
    Text,
    /// A tensor, or a float that broadcasts like a 0-dim tensor.
    TensorOrFloat,
}

impl ParamKind {
    fn accepts(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (ParamKind::Tensor, Value::Tensor(_))
                | (ParamKind::Tensors, Value::Tensors(_))
                | (ParamKind::Int, Value::Int(_))
                | (ParamKind::Ints, Value::Ints(_))
                | (ParamKind::Float, Value::Float(_) | Value::Int(_))
                | (ParamKind::Bool, Value::Bool(_))
                | (ParamKind::Dtype, Value::Dtype(_))
                | (ParamKind::Text, Value::Text(_))
                | (
                    ParamKind::TensorOrFloat,
                    Value::Tensor(_) | Value::Float(_) | Value::Int(_)
                )
        )
    }

    fn name(self) -> &'static str {
        match self {
            ParamKind::Tensor => "tensor",
            ParamKind::Tensors => "tensors",
            ParamKind::Int => "int",
            ParamKind::Ints => "ints",
            ParamKind::Float => "float",
            ParamKind::Bool => "bool",
            ParamKind::Dtype => "dtype",
            ParamKind::Text => "text",
            ParamKind::TensorOrFloat => "tensor|float",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: ParamKind,
    /// May be left out or passed as `none`.
    pub optional: bool,
}

const fn p(name: &'static str, kind: ParamKind) -> Param {
    Param {
        name,
        kind,
        optional: false,
    }
}
const fn opt(name: &'static str, kind: ParamKind) -> Param {
    Param {
        name,
        kind,
        optional: true,
    }
}

use ParamKind as K;

/// The longest shape or dim list an op takes.
pub const MAX_DIMS: usize = 64;

/// How an op's FLOPs are counted. Hardware FLOPs (HFU) are the sum over executed ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flops {
    /// Data movement, selection, creation: no arithmetic.
    Zero,
    /// `c` per element of the outputs (per element of the first input for in-place ops).
    PerElement(u32),
    /// `c` per element of the first input (reductions, normalisations).
    PerInput(u32),
    /// `2·K` per output element, K the contracted size (matmul, mm, bmm, linear).
    Contraction,
    /// `2·∏` over every index of the equation (contractions), or `∏` when nothing is summed.
    Einsum,
    /// `4·B·H·T·S·D`: QKᵀ and PV over the full (unmasked) score matrix, as the MFU convention
    /// counts causal attention.
    Attention,
    /// Twice the forward FLOPs recorded since the last backward (the 2× rule of backprop).
    Backward,
}

impl fmt::Display for Flops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flops::Zero => write!(f, "0"),
            Flops::PerElement(c) => write!(f, "{c}·numel(out)"),
            Flops::PerInput(c) => write!(f, "{c}·numel(in)"),
            Flops::Contraction => write!(f, "2·numel(out)·K"),
            Flops::Einsum => write!(f, "2·∏ index sizes"),
            Flops::Attention => write!(f, "4·B·H·T·S·D"),
            Flops::Backward => write!(f, "2·forward since last backward"),
        }
    }
}

/// State an executor may touch: the run's device and its no-grad scopes.
pub struct Ctx {
    pub device: Device,
    no_grad: Vec<tch::NoGradGuard>,
}

impl Ctx {
    pub fn new(device: Device) -> Self {
        Self {
            device,
            no_grad: Vec::new(),
        }
    }

    pub fn no_grad_depth(&self) -> usize {
        self.no_grad.len()
    }
}

impl Drop for Ctx {
    /// Each guard restores the grad mode it found, so they must go innermost first: dropped in
    /// the Vec's order, the outermost would restore "enabled" and the next one "disabled" again,
    /// leaving this thread without autograd after a run that ended inside a no-grad scope.
    fn drop(&mut self) {
        while self.no_grad.pop().is_some() {}
    }
}

pub type Exec = fn(&mut Ctx, &Args) -> OpResult<Vec<Tensor>>;

pub struct Op {
    pub name: &'static str,
    pub params: &'static [Param],
    pub flops: Flops,
    /// What its outputs may allocate, known before it runs (`bound.rs`).
    pub alloc: Alloc,
    pub exec: Exec,
}

impl Op {
    /// Arity and kinds, before the executor sees anything.
    pub fn check(&self, values: &[Value]) -> OpResult<()> {
        if values.len() > self.params.len() {
            return Err(bad(format!(
                "takes at most {} arguments ({}), got {}",
                self.params.len(),
                self.signature(),
                values.len()
            )));
        }
        for (i, param) in self.params.iter().enumerate() {
            match values.get(i) {
                None | Some(Value::None) if param.optional => {}
                None | Some(Value::None) => {
                    return Err(bad(format!(
                        "argument {i} ({}) is required: {}",
                        param.name,
                        self.signature()
                    )))
                }
                Some(v) if !param.kind.accepts(v) => {
                    return Err(bad(format!(
                        "argument {i} ({}) must be {}, got {}",
                        param.name,
                        param.kind.name(),
                        v.kind_name()
                    )))
                }
                // Every ints parameter is a shape or a list of dims: a longer one only makes
                // libtorch build (and the host keep) metadata the size of the list.
                Some(Value::Ints(v)) if v.len() > MAX_DIMS => {
                    return Err(bad(format!(
                        "argument {i} ({}) lists {} values; shapes and dim lists have at most {MAX_DIMS}",
                        param.name,
                        v.len()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// An upper bound on what a call allocates, from its arguments' metadata alone.
    pub fn bound(&self, args: &Args) -> Bound {
        bound::bound(self.alloc, args)
    }

    /// `name(a: tensor, b: tensor|float, dim: int?)`.
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| {
                format!(
                    "{}: {}{}",
                    p.name,
                    p.kind.name(),
                    if p.optional { "?" } else { "" }
                )
            })
            .collect();
        format!("{}({})", self.name, params.join(", "))
    }
}

/// An op's arguments, with accessors that turn a wrong kind or dtype into an [`OpError`].
pub struct Args {
    pub values: Vec<Value>,
}

/// A tensor operand or a scalar.
pub enum Operand<'a> {
    Tensor(&'a Tensor),
    Scalar(f64),
}

fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::BFloat16 | Kind::Half | Kind::Double
    )
}

impl Args {
    fn get(&self, i: usize) -> Option<&Value> {
        match self.values.get(i) {
            None | Some(Value::None) => None,
            v => v,
        }
    }

    fn missing(i: usize) -> OpError {
        bad(format!("argument {i} is missing"))
    }

    pub fn t(&self, i: usize) -> OpResult<&Tensor> {
        match self.get(i) {
            Some(Value::Tensor(t)) => Ok(t),
            Some(v) => Err(bad(format!(
                "argument {i} must be a tensor, got {}",
                v.kind_name()
            ))),
            None => Err(Self::missing(i)),
        }
    }

    pub fn opt_t(&self, i: usize) -> OpResult<Option<&Tensor>> {
        self.get(i).map(|_| self.t(i)).transpose()
    }

    /// A floating-point tensor (f32, bf16, f16).
    pub fn ft(&self, i: usize) -> OpResult<&Tensor> {
        let t = self.t(i)?;
        if !is_float(t.kind()) {
            return Err(OpError::new(
                Code::WrongDtype,
                format!(
                    "argument {i} must be a floating-point tensor, got {}",
                    dtype_name(t.kind())
                ),
            ));
        }
        Ok(t)
    }

    /// An i64 index tensor.
    pub fn it(&self, i: usize) -> OpResult<&Tensor> {
        let t = self.t(i)?;
        if t.kind() != Kind::Int64 {
            return Err(OpError::new(
                Code::WrongDtype,
                format!(
                    "argument {i} must be an i64 index tensor, got {}",
                    dtype_name(t.kind())
                ),
            ));
        }
        Ok(t)
    }

    pub fn ts(&self, i: usize) -> OpResult<&[Tensor]> {
        match self.get(i) {
            Some(Value::Tensors(t)) if !t.is_empty() => Ok(t),
            Some(Value::Tensors(_)) => Err(bad(format!("argument {i} is an empty tensor list"))),
            Some(v) => Err(bad(format!(
                "argument {i} must be a list of tensors, got {}",
                v.kind_name()
            ))),
            None => Err(Self::missing(i)),
        }
    }

    pub fn int(&self, i: usize) -> OpResult<i64> {
        match self.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            Some(v) => Err(bad(format!(
                "argument {i} must be an int, got {}",
                v.kind_name()
            ))),
            None => Err(Self::missing(i)),
        }
    }

    pub fn int_or(&self, i: usize, default: i64) -> OpResult<i64> {
        self.get(i).map_or(Ok(default), |_| self.int(i))
    }

    pub fn ints(&self, i: usize) -> OpResult<&[i64]> {
        match self.get(i) {
            Some(Value::Ints(v)) => Ok(v),
            Some(v) => Err(bad(format!(
                "argument {i} must be a list of ints, got {}",
                v.kind_name()
            ))),
            None => Err(Self::missing(i)),
        }
    }

    pub fn opt_ints(&self, i: usize) -> OpResult<Option<&[i64]>> {
        self.get(i).map(|_| self.ints(i)).transpose()
    }

    pub fn float(&self, i: usize) -> OpResult<f64> {
        match self.get(i) {
            Some(Value::Float(v)) => Ok(*v),
            Some(Value::Int(v)) => Ok(*v as f64),
            Some(v) => Err(bad(format!(
                "argument {i} must be a float, got {}",
                v.kind_name()
            ))),
            None => Err(Self::missing(i)),
        }
    }

    pub fn opt_float(&self, i: usize) -> OpResult<Option<f64>> {
        self.get(i).map(|_| self.float(i)).transpose()
    }

    pub fn flag_or(&self, i: usize, default: bool) -> OpResult<bool> {
        match self.get(i) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(bad(format!(
                "argument {i} must be a bool, got {}",
                v.kind_name()
            ))),
            None => Ok(default),
        }
    }

    pub fn opt_dtype(&self, i: usize) -> OpResult<Option<Kind>> {
        match self.get(i) {
            Some(Value::Dtype(k)) => Ok(Some(*k)),
            Some(v) => Err(bad(format!(
                "argument {i} must be a dtype, got {}",
                v.kind_name()
            ))),
            None => Ok(None),
        }
    }

    pub fn text_or<'a>(&'a self, i: usize, default: &'a str) -> OpResult<&'a str> {
        match self.get(i) {
            Some(Value::Text(s)) => Ok(s),
            Some(v) => Err(bad(format!(
                "argument {i} must be text, got {}",
                v.kind_name()
            ))),
            None => Ok(default),
        }
    }

    pub fn operand(&self, i: usize) -> OpResult<Operand<'_>> {
        match self.get(i) {
            Some(Value::Tensor(t)) => Ok(Operand::Tensor(t)),
            Some(Value::Float(v)) => Ok(Operand::Scalar(*v)),
            Some(Value::Int(v)) => Ok(Operand::Scalar(*v as f64)),
            Some(v) => Err(bad(format!(
                "argument {i} must be a tensor or a float, got {}",
                v.kind_name()
            ))),
            None => Err(Self::missing(i)),
        }
    }

    /// Every tensor among the arguments, for byte accounting.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.values.iter().flat_map(|v| match v {
            Value::Tensor(t) => std::slice::from_ref(t),
            Value::Tensors(ts) => ts.as_slice(),
            _ => &[],
        })
    }
}

pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "f32",
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        Kind::Int64 => "i64",
        Kind::Uint8 => "u8",
        Kind::Bool => "bool",
        Kind::Double => "f64",
        Kind::Int => "i32",
        _ => "an unsupported dtype",
    }
}

/// Broadcasting shapes, checked here so that the error is a shape mismatch that names both.
fn check_broadcast(a: &Tensor, b: &Tensor) -> OpResult<()> {
    let (sa, sb) = (a.size(), b.size());
    let ok = sa
        .iter()
        .rev()
        .zip(sb.iter().rev())
        .all(|(x, y)| x == y || *x == 1 || *y == 1);
    if ok {
        Ok(())
    } else {
        Err(OpError::new(
            Code::ShapeMismatch,
            format!("shapes {sa:?} and {sb:?} do not broadcast"),
        ))
    }
}

/// The contracted sizes of `a @ b` (torch.matmul's rules for ≥ 1-D operands).
fn check_matmul(a: &Tensor, b: &Tensor) -> OpResult<()> {
    let (sa, sb) = (a.size(), b.size());
    let k_a = sa.last().copied();
    let k_b = if sb.len() == 1 {
        sb.first().copied()
    } else {
        sb.get(sb.len().wrapping_sub(2)).copied()
    };
    match (k_a, k_b) {
        (Some(x), Some(y)) if x == y => Ok(()),
        _ => Err(OpError::new(
            Code::ShapeMismatch,
            format!("cannot multiply shapes {sa:?} and {sb:?}"),
        )),
    }
}

fn one(t: Tensor) -> OpResult<Vec<Tensor>> {
    Ok(vec![t])
}

fn none() -> OpResult<Vec<Tensor>> {
    Ok(Vec::new())
}

fn reduction(name: &str) -> OpResult<Reduction> {
    match name {
        "mean" => Ok(Reduction::Mean),
        "sum" => Ok(Reduction::Sum),
        "none" => Ok(Reduction::None),
        other => Err(bad(format!(
            "reduction must be mean, sum or none, not '{other}'"
        ))),
    }
}

/// `a OP b` with broadcasting, where `b` may be a scalar.
fn binary(
    a: &Args,
    tensor: fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>,
    scalar: fn(&Tensor, f64) -> Result<Tensor, tch::TchError>,
) -> OpResult<Vec<Tensor>> {
    let x = a.t(0)?;
    match a.operand(1)? {
        Operand::Tensor(y) => {
            check_broadcast(x, y)?;
            one(tensor(x, y)?)
        }
        Operand::Scalar(s) => one(scalar(x, s)?),
    }
}

/// `a OP= b` in place; `b` must broadcast to `a`'s shape.
fn binary_(
    a: &Args,
    tensor: fn(&mut Tensor, &Tensor) -> Result<Tensor, tch::TchError>,
    scalar: fn(&Tensor, f64) -> Result<Tensor, tch::TchError>,
) -> OpResult<Vec<Tensor>> {
    let mut x = a.t(0)?.shallow_clone();
    match a.operand(1)? {
        Operand::Tensor(y) => {
            check_broadcast(&x, y)?;
            let _ = tensor(&mut x, y)?;
        }
        Operand::Scalar(s) => {
            let _ = scalar(&x, s)?;
        }
    }
    none()
}

fn unary(a: &Args, f: fn(&Tensor) -> Result<Tensor, tch::TchError>) -> OpResult<Vec<Tensor>> {
    one(f(a.t(0)?)?)
}

fn float_unary(a: &Args, f: fn(&Tensor) -> Result<Tensor, tch::TchError>) -> OpResult<Vec<Tensor>> {
    one(f(a.ft(0)?)?)
}

fn unary_(a: &Args, f: fn(&mut Tensor) -> Result<Tensor, tch::TchError>) -> OpResult<Vec<Tensor>> {
    let _ = f(&mut a.t(0)?.shallow_clone())?;
    none()
}

fn shape_of(shape: &[i64]) -> OpResult<&[i64]> {
    if shape.iter().any(|d| *d < 0) {
        return Err(bad(format!(
            "a shape cannot have negative sizes: {shape:?}"
        )));
    }
    Ok(shape)
}

/// scatter-reduce with `sum` or `mean`, composed from scatter_add so it works on every device
/// and lets a guest leave `self` out of the mean.
fn scatter_reduce(a: &Args) -> OpResult<Vec<Tensor>> {
    let (x, dim, idx, src) = (a.t(0)?, a.int(1)?, a.it(2)?, a.t(3)?);
    let how = a.text_or(4, "sum")?;
    let include_self = a.flag_or(5, true)?;
    let zeros = x.f_zeros_like()?;
    let sums = zeros.f_scatter_add(dim, idx, src)?;
    let out = match (how, include_self) {
        ("sum", true) => x.f_add(&sums)?,
        ("sum", false) => {
            let hit = scalar::gt(&zeros.f_scatter_add(dim, idx, &src.f_ones_like()?)?, 0.0)?;
            sums.f_where_self(&hit, x)?
        }
        ("mean", _) => {
            let counts = zeros.f_scatter_add(dim, idx, &src.f_ones_like()?)?;
            let hit = scalar::gt(&counts, 0.0)?;
            let (sums, counts) = if include_self {
                (sums.f_add(x)?, scalar::add(&counts, 1.0)?)
            } else {
                (sums, counts)
            };
            sums.f_div(&scalar::clamp_min(&counts, 1.0)?)?
                .f_where_self(&hit, x)?
        }
        (other, _) => {
            return Err(bad(format!(
                "scatter_reduce takes reduce = sum or mean, not '{other}'"
            )))
        }
    };
    one(out)
}

fn norm(a: &Args) -> OpResult<Vec<Tensor>> {
    let x = a.ft(0)?;
    let p = a.opt_float(1)?.unwrap_or(2.0);
    let keepdim = a.flag_or(3, false)?;
    one(match a.opt_ints(2)? {
        None if p == 2.0 => x.f_norm()?,
        None => scalar::norm(&x.f_flatten(0, -1)?, p, &[0], false)?,
        Some(dims) => scalar::norm(x, p, dims, keepdim)?,
    })
}

fn einsum(a: &Args) -> OpResult<Vec<Tensor>> {
    let eq = a.text_or(0, "")?;
    let ts = a.ts(1)?;
    if eq.is_empty() {
        return Err(bad("einsum needs an equation"));
    }
    one(Tensor::f_einsum(eq, ts, None::<&[i64]>)?)
}

/// From the equation resolved as libtorch does: labels after an ellipsis take the dims after
/// the ones it spans, a label of size 1 broadcasts, and an implicit output keeps the labels
/// used once.
fn einsum_flops(args: &Args) -> f64 {
    let (Ok(eq), Ok(ts)) = (args.text_or(0, ""), args.ts(1)) else {
        return 0.0;
    };
    let shapes: Vec<Vec<i64>> = ts.iter().map(Tensor::size).collect();
    bound::Einsum::parse(eq, &shapes).map_or(0.0, |e| e.flops())
}

fn sdpa(a: &Args) -> OpResult<Vec<Tensor>> {
    let (q, k, v) = (a.ft(0)?, a.ft(1)?, a.ft(2)?);
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        if t.dim() != 4 {
            return Err(OpError::new(
                Code::ShapeMismatch,
                format!(
                    "{name} must be [batch, heads, seq, head_dim], got {:?}",
                    t.size()
                ),
            ));
        }
    }
    let causal = a.flag_or(3, false)?;
    let scale = a.opt_float(4)?;
    let gqa = a.flag_or(5, false)?;
    one(Tensor::f_scaled_dot_product_attention::<Tensor>(
        q, k, v, None, 0.0, causal, scale, gqa,
    )?)
}

/// Elements of `t`, in f64: tch's `numel` multiplies the sizes in i64, which overflows for a
/// tensor with a 0 among huge sizes (and then panics in a debug build).
fn numel(t: &Tensor) -> f64 {
    t.size().iter().map(|&d| d as f64).product()
}

/// FLOPs of one call. `Backward` is the host's to count (it needs the graph's history).
pub fn flops(op: &Op, args: &Args, outputs: &[Tensor]) -> f64 {
    match op.flops {
        Flops::Zero | Flops::Backward => 0.0,
        Flops::PerElement(c) => {
            let n: f64 = if outputs.is_empty() {
                args.t(0).map(numel).unwrap_or(0.0)
            } else {
                outputs.iter().map(numel).sum()
            };
            c as f64 * n
        }
        Flops::PerInput(c) => c as f64 * args.t(0).map(numel).unwrap_or(0.0),
        Flops::Contraction => {
            let k = args
                .t(0)
                .ok()
                .and_then(|t| t.size().last().copied())
                .unwrap_or(0);
            2.0 * outputs.first().map(numel).unwrap_or(0.0) * k as f64
        }
        Flops::Einsum => einsum_flops(args),
        Flops::Attention => {
            let (Ok(q), Ok(k)) = (args.t(0), args.t(1)) else {
                return 0.0;
            };
            let (sq, sk) = (q.size(), k.size());
            if sq.len() != 4 || sk.len() != 4 {
                return 0.0;
            }
            // In f64: the sizes' product overflows i64 when one of the others is 0.
            4.0 * sq[0] as f64 * sq[1] as f64 * sq[2] as f64 * sk[2] as f64 * sq[3] as f64
        }
    }
}

macro_rules! op {
    ($name:literal, [$($param:expr),* $(,)?], $flops:expr, $alloc:expr, $exec:expr) => {
        Op { name: $name, params: &[$($param),*], flops: $flops, alloc: $alloc, exec: $exec }
    };
}

use Alloc as A;
use Flops::{Attention, Backward, Contraction, PerElement, PerInput, Zero};

/// Every op a submission can call. Names follow PyTorch; a trailing `_` marks an in-place op.
pub static REGISTRY: &[Op] = &[
    // ── creation and casts ──
    op!(
        "zeros",
        [p("shape", K::Ints), opt("dtype", K::Dtype)],
        Zero,
        A::Rule(|a| bound::creation(a, 0, 1, Kind::Float)),
        |c, a| {
            one(Tensor::f_zeros(
                shape_of(a.ints(0)?)?,
                (a.opt_dtype(1)?.unwrap_or(Kind::Float), c.device),
            )?)
        }
    ),
    op!(
        "ones",
        [p("shape", K::Ints), opt("dtype", K::Dtype)],
        Zero,
        A::Rule(|a| bound::creation(a, 0, 1, Kind::Float)),
        |c, a| {
            one(Tensor::f_ones(
                shape_of(a.ints(0)?)?,
                (a.opt_dtype(1)?.unwrap_or(Kind::Float), c.device),
            )?)
        }
    ),
    op!(
        "full",
        [
            p("shape", K::Ints),
            p("value", K::Float),
            opt("dtype", K::Dtype)
        ],
        Zero,
        A::Rule(|a| bound::creation(a, 0, 2, Kind::Float)),
        |c, a| {
            one(scalar::full(
                shape_of(a.ints(0)?)?,
                a.float(1)?,
                (a.opt_dtype(2)?.unwrap_or(Kind::Float), c.device),
            )?)
        }
    ),
    op!(
        "arange",
        [p("end", K::Int), opt("dtype", K::Dtype)],
        Zero,
        A::Rule(bound::arange),
        |c, a| {
            one(scalar::arange(
                a.int(0)?,
                (a.opt_dtype(1)?.unwrap_or(Kind::Int64), c.device),
            )?)
        }
    ),
    op!(
        "eye",
        [p("n", K::Int), opt("dtype", K::Dtype)],
        Zero,
        A::Rule(bound::eye),
        |c, a| {
            one(Tensor::f_eye(
                a.int(0)?,
                (a.opt_dtype(1)?.unwrap_or(Kind::Float), c.device),
            )?)
        }
    ),
    op!(
        "zeros_like",
        [p("self", K::Tensor)],
        Zero,
        A::Like,
        |_, a| unary(a, Tensor::f_zeros_like)
    ),
    op!(
        "ones_like",
        [p("self", K::Tensor)],
        Zero,
        A::Like,
        |_, a| unary(a, Tensor::f_ones_like)
    ),
    op!(
        "full_like",
        [p("self", K::Tensor), p("value", K::Float)],
        Zero,
        A::Like,
        |_, a| { one(scalar::full_like(a.t(0)?, a.float(1)?)?) }
    ),
    op!(
        "to_dtype",
        [p("self", K::Tensor), p("dtype", K::Dtype)],
        Zero,
        A::Rule(|a| bound::cast(a, 1)),
        |_, a| { one(a.t(0)?.f_to_kind(a.opt_dtype(1)?.unwrap_or(Kind::Float))?) }
    ),
    op!("copy", [p("self", K::Tensor)], Zero, A::Like, |_, a| {
        one(crusades_reference::model::detached_copy(a.t(0)?)
            .map_err(|e| OpError::new(Code::OpFailed, e.to_string()))?)
    }),
    op!(
        "copy_",
        [p("self", K::Tensor), p("src", K::Tensor)],
        Zero,
        A::Nothing,
        |_, a| {
            let (x, src) = (a.t(0)?, a.t(1)?);
            check_broadcast(x, src)?;
            x.shallow_clone().f_copy_(src)?;
            none()
        }
    ),
    op!(
        "contiguous",
        [p("self", K::Tensor)],
        Zero,
        A::Rule(bound::copy_unless_contiguous),
        |_, a| unary(a, Tensor::f_contiguous)
    ),
    op!("detach", [p("self", K::Tensor)], Zero, A::View, |_, a| {
        unary(a, Tensor::f_detach)
    }),
    op!(
        "detach_",
        [p("self", K::Tensor)],
        Zero,
        A::Nothing,
        |_, a| unary_(a, Tensor::f_detach_)
    ),
    // ── elementwise, binary ──
    op!(
        "add",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_add, scalar::add)
    ),
    op!(
        "sub",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_sub, scalar::sub)
    ),
    op!(
        "mul",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_mul, scalar::mul)
    ),
    op!(
        "div",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_div, scalar::div)
    ),
    op!(
        "pow",
        [p("self", K::Tensor), p("exponent", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_pow, scalar::pow)
    ),
    op!(
        "maximum",
        [p("self", K::Tensor), p("other", K::Tensor)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_maximum, scalar::clamp_min)
    ),
    op!(
        "minimum",
        [p("self", K::Tensor), p("other", K::Tensor)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_minimum, scalar::clamp_max)
    ),
    op!(
        "add_",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Nothing,
        |_, a| binary_(a, Tensor::f_add_, scalar::add_)
    ),
    op!(
        "sub_",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Nothing,
        |_, a| binary_(a, Tensor::f_sub_, scalar::sub_)
    ),
    op!(
        "mul_",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Nothing,
        |_, a| binary_(a, Tensor::f_mul_, scalar::mul_)
    ),
    op!(
        "div_",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Nothing,
        |_, a| binary_(a, Tensor::f_div_, scalar::div_)
    ),
    op!(
        "eq",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_eq_tensor, scalar::eq)
    ),
    op!(
        "ne",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_ne_tensor, scalar::ne)
    ),
    op!(
        "lt",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_lt_tensor, scalar::lt)
    ),
    op!(
        "le",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_le_tensor, scalar::le)
    ),
    op!(
        "gt",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_gt_tensor, scalar::gt)
    ),
    op!(
        "ge",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_ge_tensor, scalar::ge)
    ),
    op!(
        "logical_and",
        [p("self", K::Tensor), p("other", K::Tensor)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_logical_and, |x, _| x.f_logical_not())
    ),
    op!(
        "logical_or",
        [p("self", K::Tensor), p("other", K::Tensor)],
        PerElement(1),
        A::Broadcast,
        |_, a| binary(a, Tensor::f_logical_or, |x, _| x.f_logical_not())
    ),
    op!(
        "where",
        [
            p("condition", K::Tensor),
            p("self", K::Tensor),
            p("other", K::TensorOrFloat)
        ],
        PerElement(1),
        A::Broadcast,
        |_, a| {
            let (cond, x) = (a.t(0)?, a.t(1)?);
            if cond.kind() != Kind::Bool {
                return Err(OpError::new(
                    Code::WrongDtype,
                    format!(
                        "the condition must be bool, got {}",
                        dtype_name(cond.kind())
                    ),
                ));
            }
            check_broadcast(cond, x)?;
            one(match a.operand(2)? {
                Operand::Tensor(y) => {
                    check_broadcast(x, y)?;
                    x.f_where_self(cond, y)?
                }
                Operand::Scalar(s) => scalar::where_scalar(x, cond, s)?,
            })
        }
    ),
    op!(
        "masked_fill",
        [
            p("self", K::Tensor),
            p("mask", K::Tensor),
            p("value", K::Float)
        ],
        PerElement(1),
        A::Broadcast,
        |_, a| {
            let (x, mask) = (a.t(0)?, a.t(1)?);
            check_broadcast(x, mask)?;
            one(scalar::masked_fill(x, mask, a.float(2)?)?)
        }
    ),
    // ── elementwise, unary ──
    op!(
        "neg",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_neg)
    ),
    op!(
        "abs",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_abs)
    ),
    op!(
        "sign",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_sign)
    ),
    op!(
        "sqrt",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_sqrt) }
    ),
    op!(
        "rsqrt",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_rsqrt) }
    ),
    op!(
        "exp",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_exp) }
    ),
    op!(
        "log",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_log) }
    ),
    op!(
        "sin",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_sin) }
    ),
    op!(
        "cos",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_cos) }
    ),
    op!(
        "tanh",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_tanh) }
    ),
    op!(
        "sigmoid",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_sigmoid) }
    ),
    op!(
        "silu",
        [p("self", K::Tensor)],
        PerElement(4),
        A::Like,
        |_, a| { float_unary(a, Tensor::f_silu) }
    ),
    op!(
        "relu",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_relu)
    ),
    op!(
        "gelu",
        [p("self", K::Tensor), opt("approximate", K::Text)],
        PerElement(8),
        A::Like,
        |_, a| { one(a.ft(0)?.f_gelu(a.text_or(1, "none")?)?) }
    ),
    op!(
        "round",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_round)
    ),
    op!(
        "floor",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_floor)
    ),
    op!(
        "ceil",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_ceil)
    ),
    op!(
        "reciprocal",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| float_unary(a, Tensor::f_reciprocal)
    ),
    op!(
        "square",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { unary(a, Tensor::f_square) }
    ),
    op!(
        "isfinite",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| { unary(a, Tensor::f_isfinite) }
    ),
    op!(
        "isnan",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_isnan)
    ),
    op!(
        "logical_not",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Like,
        |_, a| unary(a, Tensor::f_logical_not)
    ),
    op!(
        "clamp",
        [
            p("self", K::Tensor),
            opt("min", K::Float),
            opt("max", K::Float)
        ],
        PerElement(1),
        A::Like,
        |_, a| {
            let x = a.t(0)?;
            one(match (a.opt_float(1)?, a.opt_float(2)?) {
                (Some(lo), Some(hi)) => scalar::clamp(x, lo, hi)?,
                (Some(lo), None) => scalar::clamp_min(x, lo)?,
                (None, Some(hi)) => scalar::clamp_max(x, hi)?,
                (None, None) => return Err(bad("clamp needs min, max or both")),
            })
        }
    ),
    op!(
        "neg_",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Nothing,
        |_, a| unary_(a, Tensor::f_neg_)
    ),
    op!(
        "sign_",
        [p("self", K::Tensor)],
        PerElement(1),
        A::Nothing,
        |_, a| { unary_(a, Tensor::f_sign_) }
    ),
    op!("zero_", [p("self", K::Tensor)], Zero, A::Nothing, |_, a| {
        unary_(a, Tensor::f_zero_)
    }),
    op!(
        "fill_",
        [p("self", K::Tensor), p("value", K::Float)],
        Zero,
        A::Nothing,
        |_, a| {
            let _ = scalar::fill_(a.t(0)?, a.float(1)?)?;
            none()
        }
    ),
    op!(
        "clamp_",
        [
            p("self", K::Tensor),
            opt("min", K::Float),
            opt("max", K::Float)
        ],
        PerElement(1),
        A::Nothing,
        |_, a| {
            let x = a.t(0)?;
            let _ = match (a.opt_float(1)?, a.opt_float(2)?) {
                (Some(lo), Some(hi)) => scalar::clamp_(x, lo, hi)?,
                (Some(lo), None) => scalar::clamp_min_(x, lo)?,
                (None, Some(hi)) => scalar::clamp_max_(x, hi)?,
                (None, None) => return Err(bad("clamp_ needs min, max or both")),
            };
            none()
        }
    ),
    // ── reductions, selection, gather and scatter ──
    op!(
        "sum",
        [
            p("self", K::Tensor),
            opt("dims", K::Ints),
            opt("keepdim", K::Bool),
            opt("dtype", K::Dtype)
        ],
        PerInput(1),
        A::Rule(bound::reduce_opt_dims),
        |_, a| {
            let x = a.t(0)?;
            let dtype = a.opt_dtype(3)?;
            one(match a.opt_ints(1)? {
                None => x.f_sum(dtype)?,
                Some(d) => x.f_sum_dim_intlist(d, a.flag_or(2, false)?, dtype)?,
            })
        }
    ),
    op!(
        "mean",
        [
            p("self", K::Tensor),
            opt("dims", K::Ints),
            opt("keepdim", K::Bool),
            opt("dtype", K::Dtype)
        ],
        PerInput(1),
        A::Rule(bound::reduce_opt_dims),
        |_, a| {
            let x = a.ft(0)?;
            let dtype = a.opt_dtype(3)?;
            one(match a.opt_ints(1)? {
                None => x.f_mean(dtype)?,
                Some(d) => x.f_mean_dim(d, a.flag_or(2, false)?, dtype)?,
            })
        }
    ),
    op!(
        "amax",
        [
            p("self", K::Tensor),
            p("dims", K::Ints),
            opt("keepdim", K::Bool)
        ],
        PerInput(1),
        A::Rule(bound::reduce_dims),
        |_, a| { one(a.t(0)?.f_amax(a.ints(1)?, a.flag_or(2, false)?)?) }
    ),
    op!(
        "amin",
        [
            p("self", K::Tensor),
            p("dims", K::Ints),
            opt("keepdim", K::Bool)
        ],
        PerInput(1),
        A::Rule(bound::reduce_dims),
        |_, a| { one(a.t(0)?.f_amin(a.ints(1)?, a.flag_or(2, false)?)?) }
    ),
    op!(
        "max",
        [p("self", K::Tensor)],
        PerInput(1),
        A::Rule(|a| bound::reduce(a, None, 1)),
        |_, a| unary(a, Tensor::f_max)
    ),
    op!(
        "min",
        [p("self", K::Tensor)],
        PerInput(1),
        A::Rule(|a| bound::reduce(a, None, 1)),
        |_, a| unary(a, Tensor::f_min)
    ),
    op!(
        "max_dim",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            opt("keepdim", K::Bool)
        ],
        PerInput(1),
        A::Rule(|a| bound::reduce_dim(a, 2)),
        |_, a| {
            let (v, i) = a.t(0)?.f_max_dim(a.int(1)?, a.flag_or(2, false)?)?;
            Ok(vec![v, i])
        }
    ),
    op!(
        "argmax",
        [
            p("self", K::Tensor),
            opt("dim", K::Int),
            opt("keepdim", K::Bool)
        ],
        PerInput(1),
        A::Rule(|a| bound::reduce_dim(a, 1)),
        |_, a| {
            let dim = a.get(1).map(|_| a.int(1)).transpose()?;
            one(a.t(0)?.f_argmax(dim, a.flag_or(2, false)?)?)
        }
    ),
    op!(
        "norm",
        [
            p("self", K::Tensor),
            opt("p", K::Float),
            opt("dims", K::Ints),
            opt("keepdim", K::Bool)
        ],
        PerInput(2),
        A::Rule(bound::norm),
        |_, a| norm(a)
    ),
    op!(
        "logsumexp",
        [
            p("self", K::Tensor),
            p("dims", K::Ints),
            opt("keepdim", K::Bool)
        ],
        PerInput(3),
        A::Rule(bound::logsumexp),
        |_, a| { one(a.ft(0)?.f_logsumexp(a.ints(1)?, a.flag_or(2, false)?)?) }
    ),
    op!(
        "cumsum",
        [p("self", K::Tensor), p("dim", K::Int)],
        PerInput(1),
        A::Like,
        |_, a| { one(a.t(0)?.f_cumsum(a.int(1)?, None)?) }
    ),
    op!(
        "topk",
        [
            p("self", K::Tensor),
            p("k", K::Int),
            opt("dim", K::Int),
            opt("largest", K::Bool),
            opt("sorted", K::Bool)
        ],
        Zero,
        A::Rule(bound::topk),
        |_, a| {
            let (v, i) = a.t(0)?.f_topk(
                a.int(1)?,
                a.int_or(2, -1)?,
                a.flag_or(3, true)?,
                a.flag_or(4, true)?,
            )?;
            Ok(vec![v, i])
        }
    ),
    op!(
        "sort",
        [
            p("self", K::Tensor),
            opt("dim", K::Int),
            opt("descending", K::Bool)
        ],
        Zero,
        A::Rule(|a| bound::sort(a, 2)),
        |_, a| {
            let (v, i) = a.t(0)?.f_sort(a.int_or(1, -1)?, a.flag_or(2, false)?)?;
            Ok(vec![v, i])
        }
    ),
    op!(
        "argsort",
        [
            p("self", K::Tensor),
            opt("dim", K::Int),
            opt("descending", K::Bool)
        ],
        Zero,
        A::Rule(|a| bound::sort(a, 1)),
        |_, a| { one(a.t(0)?.f_argsort(a.int_or(1, -1)?, a.flag_or(2, false)?)?) }
    ),
    op!(
        "gather",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            p("index", K::Tensor)
        ],
        Zero,
        A::Rule(bound::gather),
        |_, a| { one(a.t(0)?.f_gather(a.int(1)?, a.it(2)?, false)?) }
    ),
    op!(
        "index_select",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            p("index", K::Tensor)
        ],
        Zero,
        A::Rule(bound::index_select),
        |_, a| { one(a.t(0)?.f_index_select(a.int(1)?, a.it(2)?)?) }
    ),
    op!(
        "scatter",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            p("index", K::Tensor),
            p("src", K::Tensor)
        ],
        Zero,
        A::Like,
        |_, a| { one(a.t(0)?.f_scatter(a.int(1)?, a.it(2)?, a.t(3)?)?) }
    ),
    op!(
        "scatter_add",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            p("index", K::Tensor),
            p("src", K::Tensor)
        ],
        PerInput(1),
        A::Like,
        |_, a| { one(a.t(0)?.f_scatter_add(a.int(1)?, a.it(2)?, a.t(3)?)?) }
    ),
    op!(
        "scatter_add_",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            p("index", K::Tensor),
            p("src", K::Tensor)
        ],
        PerInput(1),
        A::Nothing,
        |_, a| {
            let _ = a
                .t(0)?
                .shallow_clone()
                .f_scatter_add_(a.int(1)?, a.it(2)?, a.t(3)?)?;
            none()
        }
    ),
    op!(
        "scatter_reduce",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            p("index", K::Tensor),
            p("src", K::Tensor),
            opt("reduce", K::Text),
            opt("include_self", K::Bool)
        ],
        PerInput(2),
        A::Rule(|a| bound::like(a, 5)),
        |_, a| scatter_reduce(a)
    ),
    op!(
        "embedding",
        [p("weight", K::Tensor), p("indices", K::Tensor)],
        Zero,
        A::Rule(bound::embedding),
        |_, a| {
            let (w, idx) = (a.ft(0)?, a.it(1)?);
            if w.dim() != 2 {
                return Err(OpError::new(
                    Code::ShapeMismatch,
                    format!("the embedding weight must be 2-D, got {:?}", w.size()),
                ));
            }
            one(Tensor::f_embedding(w, idx, -1, false, false)?)
        }
    ),
    // ── shapes ──
    op!(
        "reshape",
        [p("self", K::Tensor), p("shape", K::Ints)],
        Zero,
        A::Rule(bound::copy_unless_contiguous),
        |_, a| one(a.t(0)?.f_reshape(a.ints(1)?)?)
    ),
    op!(
        "view",
        [p("self", K::Tensor), p("shape", K::Ints)],
        Zero,
        A::View,
        |_, a| one(a.t(0)?.f_view(a.ints(1)?)?)
    ),
    op!(
        "permute",
        [p("self", K::Tensor), p("dims", K::Ints)],
        Zero,
        A::View,
        |_, a| one(a.t(0)?.f_permute(a.ints(1)?)?)
    ),
    op!(
        "transpose",
        [p("self", K::Tensor), p("dim0", K::Int), p("dim1", K::Int)],
        Zero,
        A::View,
        |_, a| one(a.t(0)?.f_transpose(a.int(1)?, a.int(2)?)?)
    ),
    op!(
        "flatten",
        [
            p("self", K::Tensor),
            opt("start", K::Int),
            opt("end", K::Int)
        ],
        Zero,
        A::Rule(bound::copy_unless_contiguous),
        |_, a| { one(a.t(0)?.f_flatten(a.int_or(1, 0)?, a.int_or(2, -1)?)?) }
    ),
    op!(
        "unsqueeze",
        [p("self", K::Tensor), p("dim", K::Int)],
        Zero,
        A::View,
        |_, a| one(a.t(0)?.f_unsqueeze(a.int(1)?)?)
    ),
    op!(
        "squeeze",
        [p("self", K::Tensor), opt("dim", K::Int)],
        Zero,
        A::View,
        |_, a| {
            let x = a.t(0)?;
            one(match a.get(1) {
                Some(_) => x.f_squeeze_dim(a.int(1)?)?,
                None => x.f_squeeze()?,
            })
        }
    ),
    op!(
        "expand",
        [p("self", K::Tensor), p("shape", K::Ints)],
        Zero,
        A::View,
        |_, a| {
            let shape = a.ints(1)?;
            // libtorch keeps a size below -1 (-1 keeps a dim) when the tensor is empty, and a
            // tensor of negative size is one no later op expects.
            if let Some(d) = shape.iter().find(|&&d| d < -1) {
                return Err(bad(format!(
                    "expand: size {d} in {shape:?}: sizes are -1 (keep) or at least 0"
                )));
            }
            one(a.t(0)?.f_expand(shape, false)?)
        }
    ),
    op!(
        "narrow",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            p("start", K::Int),
            p("length", K::Int)
        ],
        Zero,
        A::View,
        |_, a| { one(a.t(0)?.f_narrow(a.int(1)?, a.int(2)?, a.int(3)?)?) }
    ),
    op!(
        "slice",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            opt("start", K::Int),
            opt("end", K::Int),
            opt("step", K::Int)
        ],
        Zero,
        A::View,
        |_, a| {
            let step = a.int_or(4, 1)?;
            if step < 1 {
                return Err(bad(format!("slice step must be at least 1, not {step}")));
            }
            let start = a.get(2).map(|_| a.int(2)).transpose()?;
            let end = a.get(3).map(|_| a.int(3)).transpose()?;
            one(a.t(0)?.f_slice(a.int(1)?, start, end, step)?)
        }
    ),
    op!(
        "select",
        [p("self", K::Tensor), p("dim", K::Int), p("index", K::Int)],
        Zero,
        A::View,
        |_, a| one(a.t(0)?.f_select(a.int(1)?, a.int(2)?)?)
    ),
    op!(
        "cat",
        [p("tensors", K::Tensors), opt("dim", K::Int)],
        Zero,
        A::Rule(bound::concat),
        |_, a| one(Tensor::f_cat(a.ts(0)?, a.int_or(1, 0)?)?)
    ),
    op!(
        "stack",
        [p("tensors", K::Tensors), opt("dim", K::Int)],
        Zero,
        A::Rule(bound::concat),
        |_, a| one(Tensor::f_stack(a.ts(0)?, a.int_or(1, 0)?)?)
    ),
    op!(
        "split",
        [p("self", K::Tensor), p("size", K::Int), opt("dim", K::Int)],
        Zero,
        A::Rule(bound::split),
        |_, a| {
            let size = a.int(1)?;
            if size < 1 {
                return Err(bad(format!("split size must be at least 1, not {size}")));
            }
            Ok(a.t(0)?.f_split(size, a.int_or(2, 0)?)?)
        }
    ),
    op!(
        "chunk",
        [
            p("self", K::Tensor),
            p("chunks", K::Int),
            opt("dim", K::Int)
        ],
        Zero,
        A::Rule(bound::chunk),
        |_, a| {
            let n = a.int(1)?;
            if n < 1 {
                return Err(bad(format!("chunk count must be at least 1, not {n}")));
            }
            Ok(a.t(0)?.f_chunk(n, a.int_or(2, 0)?)?)
        }
    ),
    op!(
        "repeat",
        [p("self", K::Tensor), p("repeats", K::Ints)],
        Zero,
        A::Rule(bound::repeat),
        |_, a| one(a.t(0)?.f_repeat(a.ints(1)?)?)
    ),
    op!(
        "repeat_interleave",
        [
            p("self", K::Tensor),
            p("repeats", K::Int),
            opt("dim", K::Int)
        ],
        Zero,
        A::Rule(bound::repeat_interleave),
        |_, a| {
            let dim = a.get(2).map(|_| a.int(2)).transpose()?;
            one(a.t(0)?.f_repeat_interleave_self_int(a.int(1)?, dim, None)?)
        }
    ),
    op!(
        "tril",
        [p("self", K::Tensor), opt("diagonal", K::Int)],
        Zero,
        A::Like,
        |_, a| one(a.t(0)?.f_tril(a.int_or(1, 0)?)?)
    ),
    op!(
        "triu",
        [p("self", K::Tensor), opt("diagonal", K::Int)],
        Zero,
        A::Like,
        |_, a| one(a.t(0)?.f_triu(a.int_or(1, 0)?)?)
    ),
    // ── products ──
    op!(
        "matmul",
        [p("self", K::Tensor), p("other", K::Tensor)],
        Contraction,
        A::Rule(bound::matmul),
        |_, a| {
            let (x, y) = (a.ft(0)?, a.ft(1)?);
            check_matmul(x, y)?;
            one(x.f_matmul(y)?)
        }
    ),
    op!(
        "mm",
        [p("self", K::Tensor), p("other", K::Tensor)],
        Contraction,
        A::Rule(bound::mm),
        |_, a| {
            let (x, y) = (a.ft(0)?, a.ft(1)?);
            if x.dim() != 2 || y.dim() != 2 {
                return Err(OpError::new(
                    Code::ShapeMismatch,
                    format!(
                        "mm takes 2-D tensors, got {:?} and {:?}",
                        x.size(),
                        y.size()
                    ),
                ));
            }
            check_matmul(x, y)?;
            one(x.f_mm(y)?)
        }
    ),
    op!(
        "bmm",
        [p("self", K::Tensor), p("other", K::Tensor)],
        Contraction,
        A::Rule(bound::bmm),
        |_, a| {
            let (x, y) = (a.ft(0)?, a.ft(1)?);
            if x.dim() != 3 || y.dim() != 3 || x.size()[0] != y.size()[0] {
                return Err(OpError::new(
                    Code::ShapeMismatch,
                    format!(
                        "bmm takes [b, n, k] and [b, k, m], got {:?} and {:?}",
                        x.size(),
                        y.size()
                    ),
                ));
            }
            check_matmul(x, y)?;
            one(x.f_bmm(y)?)
        }
    ),
    op!(
        "linear",
        [
            p("input", K::Tensor),
            p("weight", K::Tensor),
            opt("bias", K::Tensor)
        ],
        Contraction,
        A::Rule(bound::linear),
        |_, a| {
            let (x, w) = (a.ft(0)?, a.ft(1)?);
            if w.dim() != 2 || x.size().last() != w.size().last() {
                return Err(OpError::new(
                    Code::ShapeMismatch,
                    format!(
                        "linear needs input [..., in] and weight [out, in], got {:?} and {:?}",
                        x.size(),
                        w.size()
                    ),
                ));
            }
            one(x.f_linear(w, a.opt_t(2)?)?)
        }
    ),
    op!(
        "einsum",
        [p("equation", K::Text), p("tensors", K::Tensors)],
        Flops::Einsum,
        A::Rule(bound::einsum),
        |_, a| einsum(a)
    ),
    // ── neural-network ops ──
    op!(
        "rms_norm",
        [
            p("self", K::Tensor),
            p("normalized_shape", K::Ints),
            opt("weight", K::Tensor),
            opt("eps", K::Float)
        ],
        PerInput(4),
        A::Rule(|a| bound::like(a, 3)),
        |_, a| {
            one(a
                .ft(0)?
                .f_rms_norm(a.ints(1)?, a.opt_t(2)?, a.opt_float(3)?)?)
        }
    ),
    op!(
        "layer_norm",
        [
            p("self", K::Tensor),
            p("normalized_shape", K::Ints),
            opt("weight", K::Tensor),
            opt("bias", K::Tensor),
            opt("eps", K::Float)
        ],
        PerInput(5),
        A::Rule(|a| bound::like(a, 2)),
        |_, a| {
            one(a.ft(0)?.f_layer_norm(
                a.ints(1)?,
                a.opt_t(2)?,
                a.opt_t(3)?,
                a.opt_float(4)?.unwrap_or(1e-5),
                true,
            )?)
        }
    ),
    op!(
        "softmax",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            opt("dtype", K::Dtype)
        ],
        PerInput(5),
        A::Rule(bound::softmax),
        |_, a| { one(a.ft(0)?.f_softmax(a.int(1)?, a.opt_dtype(2)?)?) }
    ),
    op!(
        "log_softmax",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            opt("dtype", K::Dtype)
        ],
        PerInput(5),
        A::Rule(bound::softmax),
        |_, a| { one(a.ft(0)?.f_log_softmax(a.int(1)?, a.opt_dtype(2)?)?) }
    ),
    op!(
        "cross_entropy",
        [
            p("logits", K::Tensor),
            p("labels", K::Tensor),
            opt("reduction", K::Text),
            opt("ignore_index", K::Int),
            opt("label_smoothing", K::Float)
        ],
        PerInput(4),
        A::Rule(bound::cross_entropy),
        |_, a| {
            let (logits, labels) = (a.ft(0)?, a.it(1)?);
            if logits.dim() != 2 || labels.dim() != 1 || logits.size()[0] != labels.size()[0] {
                return Err(OpError::new(
                    Code::ShapeMismatch,
                    format!(
                        "cross_entropy takes logits [n, classes] and labels [n], got {:?} and {:?}",
                        logits.size(),
                        labels.size()
                    ),
                ));
            }
            one(logits.f_cross_entropy_loss::<Tensor>(
                labels,
                None,
                reduction(a.text_or(2, "mean")?)?,
                a.int_or(3, -100)?,
                a.opt_float(4)?.unwrap_or(0.0),
            )?)
        }
    ),
    op!(
        "scaled_dot_product_attention",
        [
            p("q", K::Tensor),
            p("k", K::Tensor),
            p("v", K::Tensor),
            opt("is_causal", K::Bool),
            opt("scale", K::Float),
            opt("enable_gqa", K::Bool)
        ],
        Attention,
        A::Rule(bound::attention),
        |_, a| sdpa(a)
    ),
    // ── autograd ──
    op!(
        "requires_grad_",
        [p("self", K::Tensor), opt("requires_grad", K::Bool)],
        Zero,
        A::Nothing,
        |_, a| {
            let _ = a
                .t(0)?
                .shallow_clone()
                .f_requires_grad_(a.flag_or(1, true)?)?;
            none()
        }
    ),
    op!(
        "backward",
        [p("loss", K::Tensor)],
        Backward,
        A::Nothing,
        |_, a| {
            let loss = a.ft(0)?;
            if loss.numel() != 1 {
                return Err(OpError::new(
                    Code::ShapeMismatch,
                    format!("backward needs a one-element loss, got {:?}", loss.size()),
                ));
            }
            loss.f_backward()?;
            none()
        }
    ),
    op!(
        "autograd_grad",
        [
            p("outputs", K::Tensors),
            p("inputs", K::Tensors),
            opt("retain_graph", K::Bool)
        ],
        Backward,
        A::Rule(bound::gradients),
        |_, a| {
            let keep = a.flag_or(2, false)?;
            let outputs = a.ts(0)?;
            // tch hands libtorch's engine the outputs' gradient edges unchecked, and the edge
            // of a tensor that requires no grad is empty: the engine dereferences it (SIGSEGV).
            // PyTorch's own `autograd.grad` refuses such an output first; so does this.
            if let Some(i) = outputs.iter().position(|t| !t.requires_grad()) {
                return Err(bad(format!(
                    "output {i} does not require grad: no graph leads to it (mark a leaf with requires_grad_ before the forward pass)"
                )));
            }
            let grads = Tensor::f_run_backward(outputs, a.ts(1)?, keep, false)?;
            // libtorch's engine leaves the gradient of an input the outputs do not depend on
            // undefined, and any use of an undefined tensor aborts in tch.
            if let Some(i) = grads.iter().position(|g| !g.defined()) {
                return Err(bad(format!(
                    "input {i} is not reached by the backward pass from the outputs: they do not depend on it"
                )));
            }
            Ok(grads)
        }
    ),
    op!("grad", [p("self", K::Tensor)], Zero, A::View, |_, a| {
        let g = a.t(0)?.f_grad()?;
        if !g.defined() {
            return Err(bad("this tensor has no gradient: it does not require grad, or backward has not reached it"));
        }
        one(g)
    }),
    op!(
        "zero_grad",
        [p("self", K::Tensor)],
        Zero,
        A::Nothing,
        |_, a| {
            // tch's `zero_grad` unwraps libtorch's errors; the same steps with the fallible forms.
            let mut g = a.t(0)?.f_grad()?;
            if g.defined() {
                let _ = g.f_detach_()?.f_zero_()?;
            }
            none()
        }
    ),
    op!("no_grad_enter", [], Zero, A::Nothing, |c, _| {
        c.no_grad.push(tch::no_grad_guard());
        none()
    }),
    op!("no_grad_exit", [], Zero, A::Nothing, |c, _| {
        if c.no_grad.pop().is_none() {
            return Err(OpError::new(
                Code::Protocol,
                "no_grad_exit without a matching no_grad_enter",
            ));
        }
        none()
    }),
    // ── the empty op, for measuring the cost of a host call ──
    op!(
        "noop",
        [opt("self", K::Tensor)],
        Zero,
        A::Nothing,
        |_, _| none()
    ),
];

/// The registry index of `name`.
pub fn lookup(name: &str) -> Option<usize> {
    REGISTRY.iter().position(|op| op.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, values: Vec<Value>) -> OpResult<Vec<Tensor>> {
        let op = &REGISTRY[lookup(name).unwrap_or_else(|| panic!("{name} is registered"))];
        op.check(&values)?;
        (op.exec)(&mut Ctx::new(Device::Cpu), &Args { values })
    }

    fn t(v: &[f32], shape: &[i64]) -> Value {
        Value::Tensor(Tensor::from_slice(v).view(shape))
    }

    #[test]
    fn names_are_unique_and_signatures_list_optional_params() {
        for (i, op) in REGISTRY.iter().enumerate() {
            assert_eq!(lookup(op.name), Some(i), "{} is registered twice", op.name);
            let required_after_optional = op
                .params
                .windows(2)
                .any(|w| w[0].optional && !w[1].optional);
            assert!(
                !required_after_optional,
                "{}: optional params go last",
                op.name
            );
        }
        assert_eq!(
            REGISTRY[lookup("topk").unwrap()].signature(),
            "topk(self: tensor, k: int, dim: int?, largest: bool?, sorted: bool?)"
        );
    }

    #[test]
    fn arity_and_kinds_are_checked_before_execution() {
        let e = run("matmul", vec![t(&[1.0], &[1, 1])]).unwrap_err();
        assert_eq!(e.code, Code::BadArguments);
        assert!(e.message.contains("argument 1 (other) is required"), "{e}");
        let e = run("matmul", vec![t(&[1.0], &[1, 1]), Value::Float(2.0)]).unwrap_err();
        assert!(e.message.contains("must be tensor, got a float"), "{e}");
        let e = run("noop", vec![Value::None, Value::None]).unwrap_err();
        assert!(e.message.contains("at most 1"), "{e}");
    }

    #[test]
    fn shape_and_dtype_errors_have_their_own_codes() {
        let e = run("matmul", vec![t(&[1.0; 2], &[1, 2]), t(&[1.0; 3], &[1, 3])]).unwrap_err();
        assert_eq!(e.code, Code::ShapeMismatch, "{e}");
        assert!(e.message.contains("[1, 2]") && e.message.contains("[1, 3]"));
        let e = run("add", vec![t(&[1.0; 2], &[2]), t(&[1.0; 3], &[3])]).unwrap_err();
        assert_eq!(e.code, Code::ShapeMismatch, "{e}");
        let idx = Value::Tensor(Tensor::from_slice(&[0.0f32]));
        let e = run("embedding", vec![t(&[1.0; 4], &[2, 2]), idx]).unwrap_err();
        assert_eq!(e.code, Code::WrongDtype, "{e}");
        // What only libtorch can tell is an op failure with libtorch's reason, trimmed.
        let e = run("view", vec![t(&[1.0; 4], &[4]), Value::Ints(vec![3])]).unwrap_err();
        assert_eq!(e.code, Code::OpFailed);
        assert!(!e.message.contains("Exception raised from"), "{e}");
    }

    #[test]
    fn scatter_reduce_mean_matches_the_definition() {
        let x = t(&[10.0, 20.0, 30.0, 40.0], &[4]);
        let idx = Value::Tensor(Tensor::from_slice(&[1i64, 1, 3]));
        let src = || t(&[2.0, 4.0, -1.0], &[3]);
        let out = |include_self| {
            let r = run(
                "scatter_reduce",
                vec![
                    t(&[10.0, 20.0, 30.0, 40.0], &[4]),
                    Value::Int(0),
                    Value::Tensor(Tensor::from_slice(&[1i64, 1, 3])),
                    src(),
                    Value::Text("mean".into()),
                    Value::Bool(include_self),
                ],
            )
            .unwrap();
            Vec::<f32>::try_from(&r[0]).unwrap()
        };
        assert_eq!(out(false), vec![10.0, 3.0, 30.0, -1.0]);
        assert_eq!(out(true), vec![10.0, 26.0 / 3.0, 30.0, 39.0 / 2.0]);
        let sum = run("scatter_reduce", vec![x, Value::Int(0), idx, src()]).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&sum[0]).unwrap(),
            vec![10.0, 26.0, 30.0, 39.0]
        );
    }

    #[test]
    fn flop_formulas() {
        let a = Args {
            values: vec![
                Value::Tensor(Tensor::zeros([2, 3, 4], (Kind::Float, Device::Cpu))),
                Value::Tensor(Tensor::zeros([2, 4, 5], (Kind::Float, Device::Cpu))),
            ],
        };
        let bmm = &REGISTRY[lookup("bmm").unwrap()];
        let out = (bmm.exec)(&mut Ctx::new(Device::Cpu), &a).unwrap();
        assert_eq!(flops(bmm, &a, &out), 2.0 * 2.0 * 3.0 * 5.0 * 4.0);
        let e = Args {
            values: vec![
                Value::Text("bik,bkj->bij".into()),
                Value::Tensors(vec![
                    Tensor::zeros([2, 3, 4], (Kind::Float, Device::Cpu)),
                    Tensor::zeros([2, 4, 5], (Kind::Float, Device::Cpu)),
                ]),
            ],
        };
        let einsum = &REGISTRY[lookup("einsum").unwrap()];
        assert_eq!(flops(einsum, &e, &[]), 2.0 * 2.0 * 3.0 * 4.0 * 5.0);
        let q = || Value::Tensor(Tensor::zeros([2, 4, 16, 8], (Kind::Float, Device::Cpu)));
        let s = Args {
            values: vec![q(), q(), q()],
        };
        let sdpa = &REGISTRY[lookup("scaled_dot_product_attention").unwrap()];
        assert_eq!(flops(sdpa, &s, &[]), 4.0 * 2.0 * 4.0 * 16.0 * 16.0 * 8.0);
    }

    #[test]
    fn no_grad_scopes_nest_and_refuse_an_unmatched_exit() {
        let mut ctx = Ctx::new(Device::Cpu);
        let enter = &REGISTRY[lookup("no_grad_enter").unwrap()];
        let exit = &REGISTRY[lookup("no_grad_exit").unwrap()];
        let none = Args { values: vec![] };
        (enter.exec)(&mut ctx, &none).unwrap();
        (enter.exec)(&mut ctx, &none).unwrap();
        assert_eq!(ctx.no_grad_depth(), 2);
        (exit.exec)(&mut ctx, &none).unwrap();
        (exit.exec)(&mut ctx, &none).unwrap();
        assert_eq!(
            (exit.exec)(&mut ctx, &none).unwrap_err().code,
            Code::Protocol
        );
    }
    fn bound(name: &str, values: Vec<Value>) -> Bound {
        let op = &REGISTRY[lookup(name).unwrap_or_else(|| panic!("{name} is registered"))];
        let args = Args { values };
        op.check(&args.values).unwrap();
        op.bound(&args)
    }

    /// An f32 tensor of `shape` that allocates nothing: one element, expanded.
    fn huge(shape: &[i64]) -> Value {
        Value::Tensor(
            Tensor::zeros([1], (Kind::Float, Device::Cpu))
                .reshape(vec![1; shape.len()])
                .expand(shape, false),
        )
    }

    const N: i64 = 1 << 20;

    #[test]
    fn an_outer_product_is_bounded_by_its_output_before_it_runs() {
        let b = bound("matmul", vec![huge(&[N, 1]), huge(&[1, N])]);
        assert_eq!(b.bytes, Some((N * N * 4) as u64), "{b:?}");
        assert_eq!(b.tensors, 1);
        // Batches broadcast, and the operands broadcast with them are copied.
        let b = bound("matmul", vec![huge(&[8, 1, 4, 3]), huge(&[1, 5, 3, 2])]);
        let (out, a, w) = (8 * 5 * 4 * 2, 8 * 5 * 4 * 3, 8 * 5 * 3 * 2);
        assert_eq!(b.bytes, Some(4 * (out + a + w) as u64), "{b:?}");
        // A weight folded against a contiguous batch is neither copied nor expanded.
        let x = Value::Tensor(Tensor::zeros([2, 3, 4], (Kind::Float, Device::Cpu)));
        let b = bound("matmul", vec![x, huge(&[4, 5])]);
        assert_eq!(b.bytes, Some(4 * 2 * 3 * 5), "{b:?}");
        // Broadcasting is an outer product too.
        let b = bound("add", vec![huge(&[N, 1]), huge(&[1, N])]);
        assert_eq!(b.bytes, Some((N * N * 4) as u64), "{b:?}");
        let b = bound("lt", vec![huge(&[N, 1]), Value::Float(0.5)]);
        assert_eq!(b.bytes, Some((N * 4) as u64), "{b:?}");
        // Shapes that do not broadcast are the op's to refuse, with its own error.
        let b = bound("add", vec![huge(&[2]), huge(&[3])]);
        assert_eq!(b.bytes, Some(0));
    }

    #[test]
    fn einsum_bounds_count_the_output_and_the_intermediates() {
        let eq = |e: &str| Value::Text(e.into());
        let b = bound(
            "einsum",
            vec![
                eq("i,j,k->ijk"),
                Value::Tensors(
                    (0..3)
                        .map(|_| Tensor::zeros([1 << 14], (Kind::Float, Device::Cpu)))
                        .collect(),
                ),
            ],
        );
        let n = 1u64 << 14;
        // The output, the [i, j] intermediate, and a copy of each operand.
        assert_eq!(b.bytes, Some(4 * (n * n * n + n * n + 3 * n)), "{b:?}");
        // a·c is the intermediate of "ab,bc,cd->ad" even where a·d, the output, is small.
        let ts = |shapes: &[&[i64]]| {
            Value::Tensors(
                shapes
                    .iter()
                    .map(|s| Tensor::zeros(*s, (Kind::Float, Device::Cpu)))
                    .collect(),
            )
        };
        let b = bound(
            "einsum",
            vec![
                eq("ab,bc,cd->ad"),
                ts(&[&[1000, 1], &[1, 1000], &[1000, 1]]),
            ],
        );
        assert_eq!(b.bytes, Some(4 * (1000 + 1000 * 1000 + 3000)), "{b:?}");
        // An ellipsis spans the dims between its labels, and broadcasts.
        let b = bound(
            "einsum",
            vec![eq("...ij,...jk->...ik"), ts(&[&[5, 1, 2, 3], &[6, 3, 4]])],
        );
        assert_eq!(b.bytes, Some(4 * (5 * 6 * 2 * 4 + 30 + 72)), "{b:?}");
        // An implicit output keeps the labels used once.
        let b = bound("einsum", vec![eq("ij,jk"), ts(&[&[2, 3], &[3, 4]])]);
        assert_eq!(b.bytes, Some(4 * (2 * 4 + 6 + 12)), "{b:?}");
        // What libtorch refuses has no bound of its own.
        for bad in ["ij->k", "ij->jj", "i->i", "ij,jk->ik", "i.j->", "é->é"] {
            let b = bound("einsum", vec![eq(bad), ts(&[&[2, 3]])]);
            assert_eq!(b.bytes, Some(0), "{bad}: {b:?}");
        }
    }

    #[test]
    fn shapes_whose_size_overflows_have_no_bound() {
        let b = bound("zeros", vec![Value::Ints(vec![1 << 40, 1 << 40])]);
        assert_eq!(b.bytes, None, "{b:?}");
        // 2⁶² f32 elements: 2⁶⁴ bytes, which wraps a u64 to 0.
        let b = bound("zeros", vec![Value::Ints(vec![1 << 62])]);
        assert_eq!(b.bytes, None, "{b:?}");
        let b = bound(
            "zeros",
            vec![Value::Ints(vec![1 << 40]), Value::Dtype(Kind::BFloat16)],
        );
        assert_eq!(b.bytes, Some(2 << 40));
        // An empty tensor is charged as if its 0-sized dims were 1: kernels loop over the rest.
        let b = bound("zeros", vec![Value::Ints(vec![0, 1 << 40])]);
        assert_eq!(b.bytes, Some(4 << 40));
        // A negative size is refused by the op itself.
        let b = bound("zeros", vec![Value::Ints(vec![-1, 1 << 62])]);
        assert_eq!(b.bytes, Some(0));
        let b = bound("eye", vec![Value::Int(1 << 33)]);
        assert_eq!(b.bytes, None, "{b:?}");
        let b = bound("arange", vec![Value::Int(1 << 30)]);
        assert_eq!(b.bytes, Some(8 << 30));
        let b = bound("repeat", vec![huge(&[N]), Value::Ints(vec![N, N, N])]);
        assert_eq!(b.bytes, None, "{b:?}");
        let b = bound("repeat_interleave", vec![huge(&[N]), Value::Int(N)]);
        assert_eq!(b.bytes, Some((N * N * 4) as u64));
    }

    #[test]
    fn gathers_and_lists_are_bounded_by_what_they_name() {
        let w = Value::Tensor(Tensor::zeros([10, 64], (Kind::Float, Device::Cpu)));
        let idx =
            || Value::Tensor(Tensor::zeros([1], (Kind::Int64, Device::Cpu)).expand([N], false));
        assert_eq!(
            bound("embedding", vec![w, idx()]).bytes,
            Some((N * 64 * 4) as u64)
        );
        let x = Value::Tensor(Tensor::zeros([3, 10, 7], (Kind::Float, Device::Cpu)));
        let b = bound("index_select", vec![x, Value::Int(-2), idx()]);
        assert_eq!(b.bytes, Some((3 * N * 7 * 4) as u64));
        let one = Tensor::zeros([1000], (Kind::Float, Device::Cpu));
        let many = Value::Tensors((0..100).map(|_| one.shallow_clone()).collect());
        assert_eq!(bound("cat", vec![many]).bytes, Some(100 * 1000 * 4));
        // Views allocate nothing, but each is a handle: split and chunk count theirs.
        let b = bound("split", vec![huge(&[N]), Value::Int(1)]);
        assert_eq!((b.bytes, b.tensors), (Some(0), N as u64));
        let empty = Value::Tensor(Tensor::zeros([0], (Kind::Float, Device::Cpu)));
        let b = bound("chunk", vec![empty, Value::Int(1 << 40)]);
        assert_eq!(
            b.tensors,
            1 << 40,
            "chunks of an empty dim are all returned"
        );
        let b = bound("view", vec![huge(&[N]), Value::Ints(vec![-1])]);
        assert_eq!((b.bytes, b.tensors), (Some(0), 1));
    }

    #[test]
    fn einsum_flops_follow_the_ellipsis_and_broadcasting() {
        let flops_of = |eq: &str, shapes: &[&[i64]]| {
            let args = Args {
                values: vec![
                    Value::Text(eq.into()),
                    Value::Tensors(
                        shapes
                            .iter()
                            .map(|s| Tensor::zeros(*s, (Kind::Float, Device::Cpu)))
                            .collect(),
                    ),
                ],
            };
            flops(&REGISTRY[lookup("einsum").unwrap()], &args, &[])
        };
        // The labels after an ellipsis take the last dims, not the first.
        assert_eq!(
            flops_of("...ij,...jk->...ik", &[&[7, 2, 3], &[3, 4]]),
            2.0 * 7.0 * 2.0 * 3.0 * 4.0
        );
        // A label of size 1 broadcasts: it counts at the other operand's size.
        assert_eq!(flops_of("ij,ij->", &[&[1, 3], &[5, 3]]), 2.0 * 5.0 * 3.0);
        // Nothing summed: one multiply per output element.
        assert_eq!(flops_of("i,j", &[&[3], &[4]]), 12.0);
        assert_eq!(
            flops_of("bik,bkj->bij", &[&[2, 3, 4], &[2, 4, 5]]),
            2.0 * 2.0 * 3.0 * 4.0 * 5.0
        );
    }

    #[test]
    fn refused_scalar_ops_are_errors_not_panics() {
        let i = || Value::Tensor(Tensor::from_slice(&[1i64, 2]));
        // tch's own wrappers panic on each of these (tch 0.24).
        let e = run("mul_", vec![i(), Value::Float(0.5)]).unwrap_err();
        assert_eq!(e.code, Code::OpFailed, "{e}");
        let e = run(
            "norm",
            vec![t(&[1.0; 2], &[2]), Value::Float(1.0), Value::Ints(vec![5])],
        )
        .unwrap_err();
        assert_eq!(e.code, Code::OpFailed, "{e}");
        let e = run("arange", vec![Value::Int(-3)]).unwrap_err();
        assert_eq!(e.code, Code::OpFailed, "{e}");
        let e = run(
            "full",
            vec![
                Value::Ints(vec![2]),
                Value::Float(f64::NAN),
                Value::Dtype(Kind::Int64),
            ],
        )
        .unwrap_err();
        assert_eq!(e.code, Code::OpFailed, "{e}");
        let mask = Value::Tensor(Tensor::from_slice(&[1.0f32]));
        let e = run(
            "masked_fill",
            vec![t(&[1.0; 2], &[2]), mask, Value::Float(0.0)],
        )
        .unwrap_err();
        assert_eq!(e.code, Code::OpFailed, "{e}");
        // And the same calls through torch-sys give tch's results where libtorch accepts them.
        let r = run("arange", vec![Value::Int(4), Value::Dtype(Kind::BFloat16)]).unwrap();
        assert_eq!(r[0], Tensor::arange(4, (Kind::BFloat16, Device::Cpu)));
        let r = run("full", vec![Value::Ints(vec![2, 3]), Value::Float(0.1)]).unwrap();
        assert_eq!(r[0], Tensor::full([2, 3], 0.1, (Kind::Float, Device::Cpu)));
        let x = Tensor::from_slice(&[0.3f32, -1.7, 2.5]).to_kind(Kind::BFloat16);
        let r = run(
            "mul",
            vec![Value::Tensor(x.shallow_clone()), Value::Float(0.1)],
        )
        .unwrap();
        assert_eq!(r[0], x.f_mul_scalar(0.1).unwrap());
    }

    #[test]
    fn autograd_grad_refuses_outputs_without_a_graph() {
        let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let unrelated = Tensor::from_slice(&[3.0f32]);
        // libtorch's engine dereferences the empty edge of such an output (SIGSEGV).
        let e = run(
            "autograd_grad",
            vec![
                Value::Tensors(vec![unrelated]),
                Value::Tensors(vec![x.shallow_clone()]),
            ],
        )
        .unwrap_err();
        assert_eq!(e.code, Code::BadArguments, "{e}");
        // An input the outputs do not depend on comes back undefined from the engine.
        let y = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let loss = (&x * 2.0).sum(Kind::Float);
        let e = run(
            "autograd_grad",
            vec![Value::Tensors(vec![loss]), Value::Tensors(vec![y])],
        )
        .unwrap_err();
        assert_eq!(e.code, Code::BadArguments, "{e}");
    }

    #[test]
    fn a_context_dropped_inside_no_grad_scopes_restores_autograd() {
        let mut ctx = Ctx::new(Device::Cpu);
        let enter = &REGISTRY[lookup("no_grad_enter").unwrap()];
        (enter.exec)(&mut ctx, &Args { values: vec![] }).unwrap();
        (enter.exec)(&mut ctx, &Args { values: vec![] }).unwrap();
        drop(ctx);
        let x = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        assert!(
            (&x * 2.0).requires_grad(),
            "autograd is still off on this thread"
        );
    }

    #[test]
    fn expand_refuses_sizes_below_minus_one() {
        let scalar = Value::Tensor(Tensor::from_slice(&[1.0f32]).reshape([]));
        // libtorch itself makes a [-2, 0] tensor of this.
        let e = run("expand", vec![scalar, Value::Ints(vec![-2, 0])]).unwrap_err();
        assert_eq!(e.code, Code::BadArguments, "{e}");
    }
}
