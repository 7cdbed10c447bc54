//! The op registry: every tensor op a submission can call, each one entry with its name, its
//! parameters (checked before it runs), its FLOP formula and its executor over tch.
//!
//! Adding an op is adding one [`Op`] to [`REGISTRY`]. Executors call only the fallible `f_`
//! forms of tch, so whatever a guest hands in, libtorch's refusal becomes an [`OpError`] and
//! never a panic. Creation ops take the run's device from [`Ctx`]; a guest cannot name one.

use std::fmt;

use tch::{Device, Kind, Reduction, Tensor};

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

pub type Exec = fn(&mut Ctx, &Args) -> OpResult<Vec<Tensor>>;

pub struct Op {
    pub name: &'static str,
    pub params: &'static [Param],
    pub flops: Flops,
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
                Some(_) => {}
            }
        }
        Ok(())
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
    scalar: fn(&mut Tensor, f64) -> Result<Tensor, tch::TchError>,
) -> OpResult<Vec<Tensor>> {
    let mut x = a.t(0)?.shallow_clone();
    match a.operand(1)? {
        Operand::Tensor(y) => {
            check_broadcast(&x, y)?;
            let _ = tensor(&mut x, y)?;
        }
        Operand::Scalar(s) => {
            let _ = scalar(&mut x, s)?;
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
            let hit = zeros
                .f_scatter_add(dim, idx, &src.f_ones_like()?)?
                .f_gt(0.0)?;
            sums.f_where_self(&hit, x)?
        }
        ("mean", _) => {
            let counts = zeros.f_scatter_add(dim, idx, &src.f_ones_like()?)?;
            let hit = counts.f_gt(0.0)?;
            let (sums, counts) = if include_self {
                (sums.f_add(x)?, counts.f_add_scalar(1.0)?)
            } else {
                (sums, counts)
            };
            sums.f_div(&counts.f_clamp_min(1.0)?)?
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
        None => x.f_flatten(0, -1)?.f_norm_scalaropt_dim(p, [0], false)?,
        Some(dims) => x.f_norm_scalaropt_dim(p, dims, keepdim)?,
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

fn einsum_flops(args: &Args) -> f64 {
    let (Ok(eq), Ok(ts)) = (args.text_or(0, ""), args.ts(1)) else {
        return 0.0;
    };
    let (inputs, output) = eq.split_once("->").unwrap_or((eq, ""));
    let mut sizes: Vec<(char, i64)> = Vec::new();
    for (spec, t) in inputs.split(',').zip(ts) {
        let dims = t.size();
        for (c, d) in spec.trim().chars().filter(|c| c.is_alphabetic()).zip(dims) {
            if !sizes.iter().any(|(x, _)| *x == c) {
                sizes.push((c, d));
            }
        }
    }
    let all: f64 = sizes.iter().map(|(_, d)| *d as f64).product();
    let summed = sizes.iter().any(|(c, _)| !output.contains(*c));
    if summed {
        2.0 * all
    } else {
        all
    }
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

fn numel(t: &Tensor) -> f64 {
    t.numel() as f64
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
            4.0 * (sq[0] * sq[1] * sq[2]) as f64 * sk[2] as f64 * sq[3] as f64
        }
    }
}

macro_rules! op {
    ($name:literal, [$($param:expr),* $(,)?], $flops:expr, $exec:expr) => {
        Op { name: $name, params: &[$($param),*], flops: $flops, exec: $exec }
    };
}

use Flops::{Attention, Backward, Contraction, PerElement, PerInput, Zero};

/// Every op a submission can call. Names follow PyTorch; a trailing `_` marks an in-place op.
pub static REGISTRY: &[Op] = &[
    // ── creation and casts ──
    op!(
        "zeros",
        [p("shape", K::Ints), opt("dtype", K::Dtype)],
        Zero,
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
        |c, a| {
            one(Tensor::f_full(
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
        |c, a| {
            one(Tensor::f_arange(
                a.int(0)?,
                (a.opt_dtype(1)?.unwrap_or(Kind::Int64), c.device),
            )?)
        }
    ),
    op!(
        "eye",
        [p("n", K::Int), opt("dtype", K::Dtype)],
        Zero,
        |c, a| {
            one(Tensor::f_eye(
                a.int(0)?,
                (a.opt_dtype(1)?.unwrap_or(Kind::Float), c.device),
            )?)
        }
    ),
    op!("zeros_like", [p("self", K::Tensor)], Zero, |_, a| unary(
        a,
        Tensor::f_zeros_like
    )),
    op!("ones_like", [p("self", K::Tensor)], Zero, |_, a| unary(
        a,
        Tensor::f_ones_like
    )),
    op!(
        "full_like",
        [p("self", K::Tensor), p("value", K::Float)],
        Zero,
        |_, a| { one(a.t(0)?.f_full_like(a.float(1)?)?) }
    ),
    op!(
        "to_dtype",
        [p("self", K::Tensor), p("dtype", K::Dtype)],
        Zero,
        |_, a| { one(a.t(0)?.f_to_kind(a.opt_dtype(1)?.unwrap_or(Kind::Float))?) }
    ),
    op!("copy", [p("self", K::Tensor)], Zero, |_, a| {
        one(crusades_reference::model::detached_copy(a.t(0)?)
            .map_err(|e| OpError::new(Code::OpFailed, e.to_string()))?)
    }),
    op!(
        "copy_",
        [p("self", K::Tensor), p("src", K::Tensor)],
        Zero,
        |_, a| {
            let (x, src) = (a.t(0)?, a.t(1)?);
            check_broadcast(x, src)?;
            x.shallow_clone().f_copy_(src)?;
            none()
        }
    ),
    op!("contiguous", [p("self", K::Tensor)], Zero, |_, a| unary(
        a,
        Tensor::f_contiguous
    )),
    op!("detach", [p("self", K::Tensor)], Zero, |_, a| unary(
        a,
        Tensor::f_detach
    )),
    op!("detach_", [p("self", K::Tensor)], Zero, |_, a| unary_(
        a,
        Tensor::f_detach_
    )),
    // ── elementwise, binary ──
    op!(
        "add",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_add, |x, s| x.f_add_scalar(s))
    ),
    op!(
        "sub",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_sub, |x, s| x.f_sub_scalar(s))
    ),
    op!(
        "mul",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_mul, |x, s| x.f_mul_scalar(s))
    ),
    op!(
        "div",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_div, |x, s| x.f_div_scalar(s))
    ),
    op!(
        "pow",
        [p("self", K::Tensor), p("exponent", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_pow, |x, s| x.f_pow_tensor_scalar(s))
    ),
    op!(
        "maximum",
        [p("self", K::Tensor), p("other", K::Tensor)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_maximum, |x, s| x.f_clamp_min(s))
    ),
    op!(
        "minimum",
        [p("self", K::Tensor), p("other", K::Tensor)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_minimum, |x, s| x.f_clamp_max(s))
    ),
    op!(
        "add_",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary_(a, Tensor::f_add_, |x, s| x.f_add_scalar_(s))
    ),
    op!(
        "sub_",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary_(a, Tensor::f_sub_, |x, s| x.f_sub_scalar_(s))
    ),
    op!(
        "mul_",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary_(a, Tensor::f_mul_, |x, s| x.f_mul_scalar_(s))
    ),
    op!(
        "div_",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary_(a, Tensor::f_div_, |x, s| x.f_div_scalar_(s))
    ),
    op!(
        "eq",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_eq_tensor, |x, s| x.f_eq(s))
    ),
    op!(
        "ne",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_ne_tensor, |x, s| x.f_ne(s))
    ),
    op!(
        "lt",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_lt_tensor, |x, s| x.f_lt(s))
    ),
    op!(
        "le",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_le_tensor, |x, s| x.f_le(s))
    ),
    op!(
        "gt",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_gt_tensor, |x, s| x.f_gt(s))
    ),
    op!(
        "ge",
        [p("self", K::Tensor), p("other", K::TensorOrFloat)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_ge_tensor, |x, s| x.f_ge(s))
    ),
    op!(
        "logical_and",
        [p("self", K::Tensor), p("other", K::Tensor)],
        PerElement(1),
        |_, a| binary(a, Tensor::f_logical_and, |x, _| x.f_logical_not())
    ),
    op!(
        "logical_or",
        [p("self", K::Tensor), p("other", K::Tensor)],
        PerElement(1),
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
                Operand::Scalar(s) => x.f_where_scalarother(cond, s)?,
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
        |_, a| {
            let (x, mask) = (a.t(0)?, a.t(1)?);
            check_broadcast(x, mask)?;
            one(x.f_masked_fill(mask, a.float(2)?)?)
        }
    ),
    // ── elementwise, unary ──
    op!("neg", [p("self", K::Tensor)], PerElement(1), |_, a| unary(
        a,
        Tensor::f_neg
    )),
    op!("abs", [p("self", K::Tensor)], PerElement(1), |_, a| unary(
        a,
        Tensor::f_abs
    )),
    op!("sign", [p("self", K::Tensor)], PerElement(1), |_, a| unary(
        a,
        Tensor::f_sign
    )),
    op!("sqrt", [p("self", K::Tensor)], PerElement(1), |_, a| {
        float_unary(a, Tensor::f_sqrt)
    }),
    op!("rsqrt", [p("self", K::Tensor)], PerElement(1), |_, a| {
        float_unary(a, Tensor::f_rsqrt)
    }),
    op!("exp", [p("self", K::Tensor)], PerElement(1), |_, a| {
        float_unary(a, Tensor::f_exp)
    }),
    op!("log", [p("self", K::Tensor)], PerElement(1), |_, a| {
        float_unary(a, Tensor::f_log)
    }),
    op!("sin", [p("self", K::Tensor)], PerElement(1), |_, a| {
        float_unary(a, Tensor::f_sin)
    }),
    op!("cos", [p("self", K::Tensor)], PerElement(1), |_, a| {
        float_unary(a, Tensor::f_cos)
    }),
    op!("tanh", [p("self", K::Tensor)], PerElement(1), |_, a| {
        float_unary(a, Tensor::f_tanh)
    }),
    op!("sigmoid", [p("self", K::Tensor)], PerElement(1), |_, a| {
        float_unary(a, Tensor::f_sigmoid)
    }),
    op!("silu", [p("self", K::Tensor)], PerElement(4), |_, a| {
        float_unary(a, Tensor::f_silu)
    }),
    op!("relu", [p("self", K::Tensor)], PerElement(1), |_, a| unary(
        a,
        Tensor::f_relu
    )),
    op!(
        "gelu",
        [p("self", K::Tensor), opt("approximate", K::Text)],
        PerElement(8),
        |_, a| { one(a.ft(0)?.f_gelu(a.text_or(1, "none")?)?) }
    ),
    op!(
        "round",
        [p("self", K::Tensor)],
        PerElement(1),
        |_, a| unary(a, Tensor::f_round)
    ),
    op!(
        "floor",
        [p("self", K::Tensor)],
        PerElement(1),
        |_, a| unary(a, Tensor::f_floor)
    ),
    op!("ceil", [p("self", K::Tensor)], PerElement(1), |_, a| unary(
        a,
        Tensor::f_ceil
    )),
    op!(
        "reciprocal",
        [p("self", K::Tensor)],
        PerElement(1),
        |_, a| float_unary(a, Tensor::f_reciprocal)
    ),
    op!("square", [p("self", K::Tensor)], PerElement(1), |_, a| {
        unary(a, Tensor::f_square)
    }),
    op!("isfinite", [p("self", K::Tensor)], PerElement(1), |_, a| {
        unary(a, Tensor::f_isfinite)
    }),
    op!(
        "isnan",
        [p("self", K::Tensor)],
        PerElement(1),
        |_, a| unary(a, Tensor::f_isnan)
    ),
    op!(
        "logical_not",
        [p("self", K::Tensor)],
        PerElement(1),
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
        |_, a| {
            let x = a.t(0)?;
            one(match (a.opt_float(1)?, a.opt_float(2)?) {
                (Some(lo), Some(hi)) => x.f_clamp(lo, hi)?,
                (Some(lo), None) => x.f_clamp_min(lo)?,
                (None, Some(hi)) => x.f_clamp_max(hi)?,
                (None, None) => return Err(bad("clamp needs min, max or both")),
            })
        }
    ),
    op!(
        "neg_",
        [p("self", K::Tensor)],
        PerElement(1),
        |_, a| unary_(a, Tensor::f_neg_)
    ),
    op!("sign_", [p("self", K::Tensor)], PerElement(1), |_, a| {
        unary_(a, Tensor::f_sign_)
    }),
    op!("zero_", [p("self", K::Tensor)], Zero, |_, a| unary_(
        a,
        Tensor::f_zero_
    )),
    op!(
        "fill_",
        [p("self", K::Tensor), p("value", K::Float)],
        Zero,
        |_, a| {
            let _ = a.t(0)?.shallow_clone().f_fill_(a.float(1)?)?;
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
        |_, a| {
            let mut x = a.t(0)?.shallow_clone();
            let _ = match (a.opt_float(1)?, a.opt_float(2)?) {
                (Some(lo), Some(hi)) => x.f_clamp_(lo, hi)?,
                (Some(lo), None) => x.f_clamp_min_(lo)?,
                (None, Some(hi)) => x.f_clamp_max_(hi)?,
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
        |_, a| { one(a.t(0)?.f_amin(a.ints(1)?, a.flag_or(2, false)?)?) }
    ),
    op!("max", [p("self", K::Tensor)], PerInput(1), |_, a| unary(
        a,
        Tensor::f_max
    )),
    op!("min", [p("self", K::Tensor)], PerInput(1), |_, a| unary(
        a,
        Tensor::f_min
    )),
    op!(
        "max_dim",
        [
            p("self", K::Tensor),
            p("dim", K::Int),
            opt("keepdim", K::Bool)
        ],
        PerInput(1),
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
        |_, a| { one(a.ft(0)?.f_logsumexp(a.ints(1)?, a.flag_or(2, false)?)?) }
    ),
    op!(
        "cumsum",
        [p("self", K::Tensor), p("dim", K::Int)],
        PerInput(1),
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
        |_, a| scatter_reduce(a)
    ),
    op!(
        "embedding",
        [p("weight", K::Tensor), p("indices", K::Tensor)],
        Zero,
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
        |_, a| one(a.t(0)?.f_reshape(a.ints(1)?)?)
    ),
    op!(
        "view",
        [p("self", K::Tensor), p("shape", K::Ints)],
        Zero,
        |_, a| one(a.t(0)?.f_view(a.ints(1)?)?)
    ),
    op!(
        "permute",
        [p("self", K::Tensor), p("dims", K::Ints)],
        Zero,
        |_, a| one(a.t(0)?.f_permute(a.ints(1)?)?)
    ),
    op!(
        "transpose",
        [p("self", K::Tensor), p("dim0", K::Int), p("dim1", K::Int)],
        Zero,
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
        |_, a| { one(a.t(0)?.f_flatten(a.int_or(1, 0)?, a.int_or(2, -1)?)?) }
    ),
    op!(
        "unsqueeze",
        [p("self", K::Tensor), p("dim", K::Int)],
        Zero,
        |_, a| one(a.t(0)?.f_unsqueeze(a.int(1)?)?)
    ),
    op!(
        "squeeze",
        [p("self", K::Tensor), opt("dim", K::Int)],
        Zero,
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
        |_, a| one(a.t(0)?.f_expand(a.ints(1)?, false)?)
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
        |_, a| one(a.t(0)?.f_select(a.int(1)?, a.int(2)?)?)
    ),
    op!(
        "cat",
        [p("tensors", K::Tensors), opt("dim", K::Int)],
        Zero,
        |_, a| one(Tensor::f_cat(a.ts(0)?, a.int_or(1, 0)?)?)
    ),
    op!(
        "stack",
        [p("tensors", K::Tensors), opt("dim", K::Int)],
        Zero,
        |_, a| one(Tensor::f_stack(a.ts(0)?, a.int_or(1, 0)?)?)
    ),
    op!(
        "split",
        [p("self", K::Tensor), p("size", K::Int), opt("dim", K::Int)],
        Zero,
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
        |_, a| {
            let dim = a.get(2).map(|_| a.int(2)).transpose()?;
            one(a.t(0)?.f_repeat_interleave_self_int(a.int(1)?, dim, None)?)
        }
    ),
    op!(
        "tril",
        [p("self", K::Tensor), opt("diagonal", K::Int)],
        Zero,
        |_, a| one(a.t(0)?.f_tril(a.int_or(1, 0)?)?)
    ),
    op!(
        "triu",
        [p("self", K::Tensor), opt("diagonal", K::Int)],
        Zero,
        |_, a| one(a.t(0)?.f_triu(a.int_or(1, 0)?)?)
    ),
    // ── products ──
    op!(
        "matmul",
        [p("self", K::Tensor), p("other", K::Tensor)],
        Contraction,
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
        |_, a| sdpa(a)
    ),
    // ── autograd ──
    op!(
        "requires_grad_",
        [p("self", K::Tensor), opt("requires_grad", K::Bool)],
        Zero,
        |_, a| {
            let _ = a
                .t(0)?
                .shallow_clone()
                .f_requires_grad_(a.flag_or(1, true)?)?;
            none()
        }
    ),
    op!("backward", [p("loss", K::Tensor)], Backward, |_, a| {
        let loss = a.ft(0)?;
        if loss.numel() != 1 {
            return Err(OpError::new(
                Code::ShapeMismatch,
                format!("backward needs a one-element loss, got {:?}", loss.size()),
            ));
        }
        loss.f_backward()?;
        none()
    }),
    op!(
        "autograd_grad",
        [
            p("outputs", K::Tensors),
            p("inputs", K::Tensors),
            opt("retain_graph", K::Bool)
        ],
        Backward,
        |_, a| {
            let keep = a.flag_or(2, false)?;
            Ok(Tensor::f_run_backward(a.ts(0)?, a.ts(1)?, keep, false)?)
        }
    ),
    op!("grad", [p("self", K::Tensor)], Zero, |_, a| {
        let g = a.t(0)?.f_grad()?;
        if !g.defined() {
            return Err(bad("this tensor has no gradient: it does not require grad, or backward has not reached it"));
        }
        one(g)
    }),
    op!("zero_grad", [p("self", K::Tensor)], Zero, |_, a| {
        a.t(0)?.shallow_clone().zero_grad();
        none()
    }),
    op!("no_grad_enter", [], Zero, |c, _| {
        c.no_grad.push(tch::no_grad_guard());
        none()
    }),
    op!("no_grad_exit", [], Zero, |c, _| {
        if c.no_grad.pop().is_none() {
            return Err(OpError::new(
                Code::Protocol,
                "no_grad_exit without a matching no_grad_enter",
            ));
        }
        none()
    }),
    // ── the empty op, for measuring the cost of a host call ──
    op!("noop", [opt("self", K::Tensor)], Zero, |_, _| none()),
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
}
