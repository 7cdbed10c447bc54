//! The host side of the contract: bindings generated from `wit/crusades.wit`, and the store
//! state that implements them. Tensors are entries of a `ResourceTable`; the guest sees only
//! handles. Every op call goes through the registry, is counted against the limits, and is
//! accounted for.
//!
//! A host function returns `wasmtime::Result<Result<T, OpError>>`: the inner error is one the
//! guest can handle (a shape mismatch), the outer one ends the run (a limit breach). A breach
//! is also recorded in [`State::breach`], so the runner reports its exact code.

use std::time::{Duration, Instant};

use tch::{Kind, Tensor};
use wasmtime::component::{Resource, ResourceTable};

use crusades_reference::compress::CompressedTensor;
use crusades_reference::device::synchronize;
use crusades_reference::model::detached_copy;

use crate::accounting::{Accounting, Phase};
use crate::failure::{Failure, FailureCode};
use crate::limits::Limits;
use crate::registry::{self, Args, Bound, Code, Ctx, Flops, OpError, Value, REGISTRY};
use crate::session::{Session, Submitted};

mod bindings {
    wasmtime::component::bindgen!({
        world: "submission",
        path: "wit",
        with: { "crusades:submission/tensors.tensor": crate::host::TensorEntry },
        imports: { default: trappable },
    });
}

pub use bindings::{Submission, SubmissionPre};
// The contract's host traits and types, for tests that drive the host as a guest would.
#[doc(hidden)]
pub use bindings::crusades::submission::{tensors as wit, workload as wl};

/// A live tensor behind a guest handle, with the bytes it is charged.
pub struct TensorEntry {
    tensor: Tensor,
    bytes: u64,
}

/// Bytes charged for a tensor: numel × element size, a view in full and an empty tensor as if
/// its 0-sized dims were 1 ([`registry::charged_elements`]). Saturating: an expanded view's
/// count can pass 2⁶⁴ (2⁶² f32 elements), and a wrapped count would charge it next to nothing.
pub fn charged_bytes(t: &Tensor) -> u64 {
    let elt = t.f_kind().map_or(8, |k| k.elt_size_in_bytes() as u64);
    registry::charged_elements(&t.size()).map_or(u64::MAX, |n| n.saturating_mul(elt))
}

fn kind_of(d: wit::Dtype) -> Kind {
    match d {
        wit::Dtype::F32 => Kind::Float,
        wit::Dtype::Bf16 => Kind::BFloat16,
        wit::Dtype::F16 => Kind::Half,
        wit::Dtype::I64 => Kind::Int64,
        wit::Dtype::U8 => Kind::Uint8,
        wit::Dtype::Boolean => Kind::Bool,
    }
}

fn dtype_of(k: Kind) -> Option<wit::Dtype> {
    Some(match k {
        Kind::Float => wit::Dtype::F32,
        Kind::BFloat16 => wit::Dtype::Bf16,
        Kind::Half => wit::Dtype::F16,
        Kind::Int64 => wit::Dtype::I64,
        Kind::Uint8 => wit::Dtype::U8,
        Kind::Bool => wit::Dtype::Boolean,
        _ => return None,
    })
}

fn wit_error(e: OpError) -> wit::OpError {
    wit::OpError {
        code: match e.code {
            Code::UnknownOp => wit::ErrorCode::UnknownOp,
            Code::BadArguments => wit::ErrorCode::BadArguments,
            Code::ShapeMismatch => wit::ErrorCode::ShapeMismatch,
            Code::WrongDtype => wit::ErrorCode::WrongDtype,
            Code::OpFailed => wit::ErrorCode::OpFailed,
            Code::Protocol => wit::ErrorCode::Protocol,
            Code::Guest => wit::ErrorCode::Guest,
        },
        message: e.message,
    }
}

pub fn code_of(e: &wit::OpError) -> Code {
    match e.code {
        wit::ErrorCode::UnknownOp => Code::UnknownOp,
        wit::ErrorCode::BadArguments => Code::BadArguments,
        wit::ErrorCode::ShapeMismatch => Code::ShapeMismatch,
        wit::ErrorCode::WrongDtype => Code::WrongDtype,
        wit::ErrorCode::OpFailed => Code::OpFailed,
        wit::ErrorCode::Protocol => Code::Protocol,
        wit::ErrorCode::Guest => Code::Guest,
    }
}

/// Caps guest linear memory and records a breach, so that it is reported as what it is rather
/// than as the guest's allocation failure.
pub struct GuestMemoryLimiter {
    cap: usize,
    breached: Option<usize>,
}

impl wasmtime::ResourceLimiter for GuestMemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.breached = Some(desired);
            wasmtime::bail!(
                "guest linear memory would grow to {desired} bytes, past the limit of {} bytes",
                self.cap
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Everything one run's store holds.
pub struct State {
    table: ResourceTable,
    pub ctx: Ctx,
    pub limits: Limits,
    pub limiter: GuestMemoryLimiter,
    pub accounting: Accounting,
    pub session: Session,
    live_bytes: u64,
    live_handles: u64,
    pub peak_bytes: u64,
    pub peak_handles: u64,
    ops: u64,
    /// Forward FLOPs of ops that built an autograd graph since the last backward.
    graph_flops: f64,
    deadline: Instant,
    /// Why the run must end, when a limit was breached.
    pub breach: Option<Failure>,
    /// The last error an op returned to the guest, to recognise it when the guest returns it.
    pub last_op_error: Option<OpError>,
    /// When the guest's clock started; window latencies run from here.
    last_mark: Option<Instant>,
    /// The phase the guest last marked, and since when.
    phase: (Phase, Instant),
    /// Per window, the label tokens whose loss the guest differentiated: the targets of
    /// `cross_entropy` calls that recorded an autograd graph. Kept as device scalars and read
    /// only after the clock stops ([`State::window_tokens`]): reading one per call would
    /// stall a GPU's queue inside the timed region.
    token_counts: Vec<Option<Tensor>>,
}

impl State {
    pub fn new(session: Session, limits: Limits) -> Self {
        let device = session.device;
        Self {
            table: ResourceTable::new(),
            ctx: Ctx::new(device),
            limits,
            limiter: GuestMemoryLimiter {
                cap: usize::try_from(limits.guest_memory_bytes).unwrap_or(usize::MAX),
                breached: None,
            },
            accounting: Accounting::new(),
            session,
            live_bytes: 0,
            live_handles: 0,
            peak_bytes: 0,
            peak_handles: 0,
            ops: 0,
            graph_flops: 0.0,
            deadline: Instant::now() + limits.timeout(),
            breach: None,
            last_op_error: None,
            last_mark: None,
            phase: (Phase::Other, Instant::now()),
            token_counts: Vec::new(),
        }
    }

    /// Starts the clock's view of the run: the deadline and the first window's start.
    pub fn start_clock(&mut self, now: Instant) {
        self.deadline = now + self.limits.timeout();
        self.last_mark = Some(now);
        self.phase = (Phase::Other, now);
        self.token_counts = (0..self.session.batches.len()).map(|_| None).collect();
    }

    /// The label tokens each window's differentiated loss covered (synchronises the device).
    pub fn window_tokens(&self) -> Vec<u64> {
        self.token_counts
            .iter()
            .map(|count| {
                count
                    .as_ref()
                    .and_then(|n| n.f_int64_value(&[]).ok())
                    .map_or(0, |n| n.max(0) as u64)
            })
            .collect()
    }

    pub fn current_phase(&self) -> Phase {
        self.phase.0
    }

    /// Ends the current phase at `now` and starts `next`.
    pub fn switch_phase(&mut self, next: Phase, now: Instant) {
        let (phase, since) = std::mem::replace(&mut self.phase, (next, now));
        self.accounting
            .record_phase(phase, now.saturating_duration_since(since));
    }

    fn count_tokens(&mut self, op: &registry::Op, args: &Args, outputs: &[Tensor]) {
        if op.name != "cross_entropy" || !outputs.iter().any(Tensor::requires_grad) {
            return;
        }
        // Labels equal to ignore_index add nothing to the loss, so they are not counted.
        let ignore = args.int_or(3, -100).unwrap_or(-100);
        let Some(counted) = args
            .tensors()
            .nth(1)
            .and_then(|labels| labels.f_ne(ignore).ok())
            .and_then(|kept| kept.f_sum(tch::Kind::Int64).ok())
        else {
            return;
        };
        let window = self.session.submitted.len();
        if let Some(slot) = self.token_counts.get_mut(window) {
            *slot = match slot.take() {
                None => Some(counted),
                Some(sum) => sum.f_add(&counted).ok(),
            };
        }
    }

    pub fn guest_memory_breach(&self) -> Option<usize> {
        self.limiter.breached
    }

    fn breach<T>(&mut self, code: FailureCode, message: String) -> wasmtime::Result<T> {
        let e = wasmtime::format_err!("{message}");
        self.breach.get_or_insert(Failure::new(code, message));
        Err(e)
    }

    /// Counts one call against the op cap and the deadline.
    fn tick(&mut self) -> wasmtime::Result<()> {
        self.ops += 1;
        if self.ops > self.limits.max_ops {
            let cap = self.limits.max_ops;
            return self.breach(
                FailureCode::OpLimit,
                format!("the guest called more than {cap} ops (limit max_ops)"),
            );
        }
        if Instant::now() > self.deadline {
            let s = self.limits.timeout_s;
            return self.breach(
                FailureCode::DeadlineExceeded,
                format!("the run took longer than {s} s (limit timeout_s)"),
            );
        }
        Ok(())
    }

    /// Charges `bytes` more of live tensors, or ends the run.
    fn charge(&mut self, bytes: u64) -> wasmtime::Result<()> {
        if self.live_handles + 1 > self.limits.max_handles {
            let cap = self.limits.max_handles;
            return self.breach(
                FailureCode::HandleLimit,
                format!("the guest holds more than {cap} live tensor handles (limit max_handles); drop the ones it no longer needs"),
            );
        }
        if self.live_bytes.saturating_add(bytes) > self.limits.tensor_bytes {
            let (live, cap) = (self.live_bytes, self.limits.tensor_bytes);
            return self.breach(
                FailureCode::TensorMemoryLimit,
                format!("a new tensor of {bytes} bytes would bring live tensors to {} bytes, past the limit of {cap} (limit tensor_bytes)", live.saturating_add(bytes)),
            );
        }
        Ok(())
    }

    /// Ends the run when what an op may allocate and return ([`Bound`]) would take live
    /// tensors or handles past their limits: before libtorch allocates it, so that a huge
    /// output fails here, by its limit, and not inside libtorch or by the OOM killer.
    fn reserve(&mut self, op: &str, bound: Bound) -> wasmtime::Result<()> {
        if self.live_handles.saturating_add(bound.tensors) > self.limits.max_handles {
            let (n, live, cap) = (bound.tensors, self.live_handles, self.limits.max_handles);
            return self.breach(
                FailureCode::HandleLimit,
                format!("{op} would return {n} tensors to the {live} live handles the guest holds, more than {cap} (limit max_handles); drop the ones it no longer needs"),
            );
        }
        let (live, cap) = (self.live_bytes, self.limits.tensor_bytes);
        match bound.bytes {
            Some(bytes) if live.saturating_add(bytes) <= cap => Ok(()),
            Some(bytes) => self.breach(
                FailureCode::TensorMemoryLimit,
                format!("{op} may allocate up to {bytes} bytes, which would bring live tensors to {} bytes, past the limit of {cap} (limit tensor_bytes)", live.saturating_add(bytes)),
            ),
            None => self.breach(
                FailureCode::TensorMemoryLimit,
                format!("{op} would allocate more than 2^64 bytes (its output's size overflows), past the limit of {cap} (limit tensor_bytes)"),
            ),
        }
    }

    fn push(&mut self, tensor: Tensor) -> wasmtime::Result<Resource<TensorEntry>> {
        let bytes = charged_bytes(&tensor);
        self.charge(bytes)?;
        self.live_bytes += bytes;
        self.live_handles += 1;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
        self.peak_handles = self.peak_handles.max(self.live_handles);
        Ok(self.table.push(TensorEntry { tensor, bytes })?)
    }

    fn tensor(&self, r: &Resource<TensorEntry>) -> wasmtime::Result<&Tensor> {
        Ok(&self.table.get(r)?.tensor)
    }

    fn value(&self, arg: wit::Arg) -> wasmtime::Result<Value> {
        Ok(match arg {
            wit::Arg::Tensor(r) => Value::Tensor(self.tensor(&r)?.shallow_clone()),
            wit::Arg::Tensors(rs) => Value::Tensors(
                rs.iter()
                    .map(|r| self.tensor(r).map(Tensor::shallow_clone))
                    .collect::<wasmtime::Result<_>>()?,
            ),
            wit::Arg::Int(v) => Value::Int(v),
            wit::Arg::Ints(v) => Value::Ints(v),
            wit::Arg::Float(v) => Value::Float(v),
            wit::Arg::Boolean(v) => Value::Bool(v),
            wit::Arg::Dtype(d) => Value::Dtype(kind_of(d)),
            wit::Arg::Text(s) => Value::Text(s),
            wit::Arg::None => Value::None,
        })
    }

    /// The bound `call` holds op `id` to with these arguments, without running it; `None` when
    /// no such op exists, a handle is not live, or the op refuses the arguments' kinds.
    #[doc(hidden)]
    pub fn bound_of(&self, id: u32, args: Vec<wit::Arg>) -> Option<Bound> {
        let op = REGISTRY.get(id as usize)?;
        let values = args
            .into_iter()
            .map(|a| self.value(a))
            .collect::<wasmtime::Result<Vec<_>>>()
            .ok()?;
        op.check(&values).ok()?;
        Some(op.bound(&Args { values }))
    }

    fn refuse(&mut self, op: &str, e: OpError) -> wit::OpError {
        let e = OpError::new(e.code, format!("{op}: {}", e.message));
        self.last_op_error = Some(e.clone());
        wit_error(e)
    }

    /// A new tensor from guest data, charged before libtorch allocates it.
    fn new_tensor<T: tch::kind::Element>(
        &mut self,
        what: &str,
        data: &[T],
        shape: &[i64],
    ) -> wasmtime::Result<Result<Resource<TensorEntry>, wit::OpError>> {
        self.tick()?;
        let numel = registry::charged_elements(shape)
            .filter(|_| shape.len() <= registry::MAX_DIMS && shape.iter().all(|&d| d >= 0));
        let Some(numel) = numel else {
            let e = OpError::new(
                Code::BadArguments,
                format!(
                    "invalid shape {:?}{}",
                    &shape[..shape.len().min(8)],
                    if shape.len() > 8 { " …" } else { "" }
                ),
            );
            return Ok(Err(self.refuse(what, e)));
        };
        self.charge(numel.saturating_mul(T::KIND.elt_size_in_bytes() as u64))?;
        let device = self.ctx.device;
        let made = Tensor::f_from_slice(data)
            .and_then(|t| t.f_view(shape))
            .and_then(|t| t.f_to_device(device));
        match made {
            Ok(t) => Ok(Ok(self.push(t)?)),
            Err(e) => {
                let mut e = OpError::from(e);
                e.message = format!("{} ({} values given)", e.message, data.len());
                Ok(Err(self.refuse(what, e)))
            }
        }
    }

    /// Checks one window's upload and takes copies of it. Values are checked after the clock
    /// stops (that needs the device); here only what metadata can tell.
    fn take_upload(&self, views: &[wl::UploadView]) -> Result<Vec<CompressedTensor>, OpError> {
        let s = &self.session;
        if views.len() != s.geometries.len() {
            return Err(OpError::new(
                Code::Protocol,
                format!(
                    "the upload has {} tensors; the model has {} parameters",
                    views.len(),
                    s.geometries.len()
                ),
            ));
        }
        let bins = s.config.hparams.bins;
        let mut out = Vec::with_capacity(views.len());
        for ((view, g), name) in views.iter().zip(&s.geometries).zip(&s.names) {
            let get = |r: &Resource<TensorEntry>| {
                self.tensor(r)
                    .map_err(|e| OpError::new(Code::BadArguments, e.to_string()))
            };
            let (idx, codes, shift, scale, lookup) = (
                get(&view.idx)?,
                get(&view.codes)?,
                get(&view.shift)?,
                get(&view.scale)?,
                get(&view.lookup)?,
            );
            let k = g.k(s.config.hparams.topk);
            let want = [g.chunks(), k];
            let check = |part: &str, t: &Tensor, kind: Kind, shape: &[i64]| {
                if t.kind() != kind {
                    return Err(OpError::new(
                        Code::WrongDtype,
                        format!(
                            "{name}.{part} must be {}, got {}",
                            registry::dtype_name(kind),
                            registry::dtype_name(t.kind())
                        ),
                    ));
                }
                if t.size() != shape && !(shape.is_empty() && t.numel() == 1) {
                    return Err(OpError::new(
                        Code::ShapeMismatch,
                        format!(
                            "{name}.{part} must have shape {shape:?}, got {:?}",
                            t.size()
                        ),
                    ));
                }
                Ok(())
            };
            check("idx", idx, Kind::Int64, &want)?;
            check("codes", codes, Kind::Uint8, &want)?;
            check("shift", shift, Kind::Float, &[])?;
            check("scale", scale, Kind::Float, &[])?;
            check("lookup", lookup, Kind::Float, &[bins])?;
            let copy = |t: &Tensor| {
                detached_copy(t).map_err(|e| OpError::new(Code::OpFailed, e.to_string()))
            };
            out.push(CompressedTensor {
                geometry: g.clone(),
                idx: copy(idx)?,
                codes: copy(codes)?,
                shift: copy(&shift.f_reshape([]).map_err(OpError::from)?)?,
                scale: copy(&scale.f_reshape([]).map_err(OpError::from)?)?,
                lookup: copy(lookup)?,
            });
        }
        Ok(out)
    }

    fn open_window(&self, window: u32) -> Result<usize, OpError> {
        let w = window as usize;
        let next = self.session.submitted.len();
        let total = self.session.batches.len();
        if w >= total {
            return Err(OpError::new(
                Code::Protocol,
                format!("window {w} does not exist; the workload has {total} windows (0..{total})"),
            ));
        }
        if w != next {
            return Err(OpError::new(
                Code::Protocol,
                format!("window {w} is not open: windows go in order, and window {next} is next"),
            ));
        }
        Ok(w)
    }
}

impl wit::HostTensor for State {
    fn shape(&mut self, t: Resource<TensorEntry>) -> wasmtime::Result<Vec<i64>> {
        Ok(self.tensor(&t)?.size())
    }

    fn dtype(&mut self, t: Resource<TensorEntry>) -> wasmtime::Result<wit::Dtype> {
        let kind = self.tensor(&t)?.kind();
        dtype_of(kind).ok_or_else(|| {
            wasmtime::format_err!("a tensor of kind {kind:?} escaped the op checks (a harness bug)")
        })
    }

    fn drop(&mut self, t: Resource<TensorEntry>) -> wasmtime::Result<()> {
        let entry = self.table.delete(t)?;
        self.live_bytes -= entry.bytes;
        self.live_handles -= 1;
        Ok(())
    }
}

impl wit::Host for State {
    fn op(&mut self, name: String) -> wasmtime::Result<Result<u32, wit::OpError>> {
        self.tick()?;
        match registry::lookup(&name) {
            Some(i) => Ok(Ok(i as u32)),
            None => {
                let e = OpError::new(
                    Code::UnknownOp,
                    format!("no op named '{name}' in the registry (`crusades ops` lists them)"),
                );
                Ok(Err(self.refuse(&name, e)))
            }
        }
    }

    fn call(
        &mut self,
        id: u32,
        args: Vec<wit::Arg>,
    ) -> wasmtime::Result<Result<Vec<Resource<TensorEntry>>, wit::OpError>> {
        self.tick()?;
        let Some(op) = REGISTRY.get(id as usize) else {
            let e = OpError::new(
                Code::UnknownOp,
                format!("no op has id {id}; resolve ids with `op(name)`"),
            );
            return Ok(Err(self.refuse("call", e)));
        };
        // Resolving a handle costs a host allocation, so a list is refused before that when it
        // names more tensors than the guest may even hold (the same handle may repeat).
        let listed = args.iter().fold(0usize, |n, a| match a {
            wit::Arg::Tensors(rs) => n.saturating_add(rs.len()),
            _ => n,
        });
        if listed as u64 > self.limits.max_handles {
            let e = OpError::new(
                Code::BadArguments,
                format!(
                    "the arguments list {listed} tensors; a call takes at most {} (limit max_handles)",
                    self.limits.max_handles
                ),
            );
            return Ok(Err(self.refuse(op.name, e)));
        }
        let values = args
            .into_iter()
            .map(|a| self.value(a))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        if let Err(e) = op.check(&values) {
            return Ok(Err(self.refuse(op.name, e)));
        }
        let args = Args { values };
        self.reserve(op.name, op.bound(&args))?;
        let start = Instant::now();
        let result = (op.exec)(&mut self.ctx, &args);
        let elapsed = start.elapsed();
        let outputs = match result {
            Ok(outputs) => outputs,
            Err(e) => return Ok(Err(self.refuse(op.name, e))),
        };
        // Every later step reads the outputs' metadata, which tch unwraps: an undefined tensor
        // or one of a kind tch does not know would panic there.
        let unfit = outputs.iter().find_map(|t| match t.f_kind() {
            _ if !t.defined() => Some("an undefined tensor".to_string()),
            _ if t.size().iter().any(|&d| d < 0) => {
                Some(format!("a tensor of shape {:?}", t.size()))
            }
            Ok(k) if dtype_of(k).is_some() => None,
            Ok(k) => Some(format!(
                "a {k:?} tensor, which the contract has no dtype for; cast first"
            )),
            Err(_) => Some("a tensor of a dtype tch does not know".to_string()),
        });
        if let Some(what) = unfit {
            let e = OpError::new(Code::OpFailed, format!("produced {what}"));
            return Ok(Err(self.refuse(op.name, e)));
        }
        let mut flops = registry::flops(op, &args, &outputs);
        if op.flops == Flops::Backward {
            flops = 2.0 * self.graph_flops;
            self.graph_flops = 0.0;
        } else if outputs.iter().any(Tensor::requires_grad) {
            self.graph_flops += flops;
        }
        self.count_tokens(op, &args, &outputs);
        let bytes = args
            .tensors()
            .chain(&outputs)
            .map(charged_bytes)
            .fold(0u64, u64::saturating_add);
        self.accounting
            .record_op(id as usize, elapsed, flops, bytes);
        drop(args);
        let handles = outputs
            .into_iter()
            .map(|t| self.push(t))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        Ok(Ok(handles))
    }

    fn from_f32(
        &mut self,
        data: Vec<f32>,
        shape: Vec<i64>,
    ) -> wasmtime::Result<Result<Resource<TensorEntry>, wit::OpError>> {
        self.new_tensor("from-f32", &data, &shape)
    }

    fn from_i64(
        &mut self,
        data: Vec<i64>,
        shape: Vec<i64>,
    ) -> wasmtime::Result<Result<Resource<TensorEntry>, wit::OpError>> {
        self.new_tensor("from-i64", &data, &shape)
    }

    fn item(&mut self, t: Resource<TensorEntry>) -> wasmtime::Result<Result<f64, wit::OpError>> {
        self.tick()?;
        let t = self.tensor(&t)?;
        if t.size().iter().any(|&d| d != 1) {
            let e = OpError::new(
                Code::ShapeMismatch,
                format!("item needs a one-element tensor, got shape {:?}", t.size()),
            );
            return Ok(Err(self.refuse("item", e)));
        }
        match t.f_double_value(&[]) {
            Ok(v) => Ok(Ok(v)),
            Err(e) => Ok(Err(self.refuse("item", e.into()))),
        }
    }
}

impl wl::Host for State {
    fn config(&mut self) -> wasmtime::Result<wl::WorkloadConfig> {
        let c = &self.session.config;
        let (m, h) = (c.model, c.hparams);
        let u = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(wl::WorkloadConfig {
            model: wl::ModelConfig {
                vocab: u(m.vocab),
                d_model: u(m.d_model),
                layers: u(m.layers),
                heads: u(m.heads),
                kv_heads: u(m.kv_heads),
                ffn: u(m.ffn),
                seq_len: u(m.seq_len),
                rms_eps: crusades_reference::model::RMS_EPS,
                rope_theta: crusades_reference::model::ROPE_THETA,
            },
            hparams: wl::HyperParams {
                lr: h.lr,
                weight_decay: h.weight_decay,
                momentum_decay: h.momentum_decay,
                chunk: u(h.chunk),
                topk: u(h.topk),
                bins: u(h.bins),
                range_sigmas: h.quant_range_sigmas,
                eval_lr_factor: h.eval_lr_factor,
            },
            seqs_per_window: u(c.seqs_per_window),
            windows: u(c.windows as i64),
            peers: u(c.peers as i64),
        })
    }

    fn mark_phase(&mut self, phase: wl::Phase) -> wasmtime::Result<()> {
        self.tick()?;
        // Phase times are the device's: wait for the work queued so far.
        synchronize(self.session.device);
        let next = match phase {
            wl::Phase::Train => Phase::Train,
            wl::Phase::Compress => Phase::Compress,
            wl::Phase::Aggregate => Phase::Aggregate,
            wl::Phase::Other => Phase::Other,
        };
        self.switch_phase(next, Instant::now());
        Ok(())
    }

    fn parameters(&mut self) -> wasmtime::Result<Vec<wl::Parameter>> {
        self.tick()?;
        let params: Vec<(String, Tensor)> = self
            .session
            .names
            .iter()
            .cloned()
            .zip(self.session.params.iter().map(Tensor::shallow_clone))
            .collect();
        params
            .into_iter()
            .map(|(name, t)| {
                Ok(wl::Parameter {
                    name,
                    value: self.push(t)?,
                })
            })
            .collect()
    }

    fn batch(&mut self, window: u32) -> wasmtime::Result<Result<wl::WindowBatch, wit::OpError>> {
        self.tick()?;
        let w = match self.open_window(window) {
            Ok(w) => w,
            Err(e) => return Ok(Err(self.refuse("batch", e))),
        };
        let (x, y) = {
            let (x, y) = &self.session.batches[w];
            (x.shallow_clone(), y.shallow_clone())
        };
        Ok(Ok(wl::WindowBatch {
            inputs: self.push(x)?,
            labels: self.push(y)?,
        }))
    }

    fn peer_uploads(
        &mut self,
        window: u32,
    ) -> wasmtime::Result<Result<Vec<Vec<wl::UploadTensor>>, wit::OpError>> {
        self.tick()?;
        let w = match self.open_window(window) {
            Ok(w) => w,
            Err(e) => return Ok(Err(self.refuse("peer-uploads", e))),
        };
        let parts: Vec<Vec<[Tensor; 5]>> = self.session.peers[w]
            .iter()
            .map(|u| {
                u.tensors
                    .iter()
                    .map(|c| {
                        [&c.idx, &c.codes, &c.shift, &c.scale, &c.lookup].map(Tensor::shallow_clone)
                    })
                    .collect()
            })
            .collect();
        let mut peers = Vec::with_capacity(parts.len());
        for upload in parts {
            let mut tensors = Vec::with_capacity(upload.len());
            for [idx, codes, shift, scale, lookup] in upload {
                tensors.push(wl::UploadTensor {
                    idx: self.push(idx)?,
                    codes: self.push(codes)?,
                    shift: self.push(shift)?,
                    scale: self.push(scale)?,
                    lookup: self.push(lookup)?,
                });
            }
            peers.push(tensors);
        }
        Ok(Ok(peers))
    }

    fn submit(
        &mut self,
        window: u32,
        loss: Resource<TensorEntry>,
        upload: Vec<wl::UploadView>,
    ) -> wasmtime::Result<Result<(), wit::OpError>> {
        self.tick()?;
        if let Err(e) = self.open_window(window) {
            return Ok(Err(self.refuse("submit", e)));
        }
        let loss = self.tensor(&loss)?;
        if loss.numel() != 1 || !matches!(loss.kind(), Kind::Float | Kind::BFloat16 | Kind::Half) {
            let e = OpError::new(
                Code::ShapeMismatch,
                format!(
                    "the loss must be a one-element float tensor, got {} of shape {:?}",
                    registry::dtype_name(loss.kind()),
                    loss.size()
                ),
            );
            return Ok(Err(self.refuse("submit", e)));
        }
        let loss = match detached_copy(loss) {
            Ok(l) => l,
            Err(e) => {
                return Ok(Err(
                    self.refuse("submit", OpError::new(Code::OpFailed, e.to_string()))
                ))
            }
        };
        let upload = match self.take_upload(&upload) {
            Ok(u) => u,
            Err(e) => return Ok(Err(self.refuse("submit", e))),
        };
        self.session.submitted.push(Submitted { loss, upload });
        // A window's latency is the device's: wait for it before reading the clock.
        synchronize(self.session.device);
        let now = Instant::now();
        if let Some(start) = self.last_mark.replace(now) {
            self.accounting.record_window(now - start);
        }
        Ok(Ok(()))
    }
}

/// How long the deadline ticker sleeps between epochs.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
