//! Fuzzes the host's op-call path: `State`'s `op`, `call`, `from-f32`, `from-i64`, `item` and
//! the tensor resource's methods, exactly as a guest's calls reach them (handles resolved
//! through the store's resource table), with random op names and ids, argument lists of every
//! `arg` variant, shapes (empty, negative, huge, many dims), dtypes, values (NaN, ±∞, huge) and
//! handles (live, dropped, never issued). Every call must end as an op error, a run-ending
//! error, or valid tensors: a panic or a call slower than [`SLOW`] is a finding, and the test
//! fails with the input that caused it.
//!
//! The run is bounded in time: `CRUSADES_FUZZ_SECS` (default 20), seed `CRUSADES_FUZZ_SEED`
//! (default: a fixed one, so that CI replays the same calls and stays reproducible; any other
//! seed explores further, and `CRUSADES_FUZZ_SEED=clock` takes one from the clock, printed). A seed replays the same sequence of calls;
//! `CRUSADES_FUZZ_TRACE=1` prints each input before it runs (for a crash that kills the
//! process, such as a segfault inside libtorch).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crusades_reference::config::WorkloadConfig;
use crusades_sandbox::host::{wit, wl, State, TensorEntry};
use crusades_sandbox::registry::{Alloc, Bound, ParamKind, REGISTRY};
use crusades_sandbox::session::Session;
use crusades_sandbox::Limits;
use tch::Device;
use wasmtime::component::Resource;

/// A call slower than this is reported as a hang.
const SLOW: Duration = Duration::from_secs(2);
/// Live tensor bytes the fuzzed store may hold: large enough for every op to succeed on the
/// pool's tensors, small enough that no single call can take the machine.
const TENSOR_BYTES: u64 = 64 << 20;
const MAX_HANDLES: u64 = 4096;
/// Elements of a generated tensor, at most.
const MAX_NUMEL: i64 = 4096;
/// The pool of live handles is trimmed back to `POOL / 2` when it grows past this.
const POOL: usize = 96;

/// splitmix64: small, fast, and the same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Sizes no sane workload uses: negative, past 2³¹, past 2⁶² (where bytes wrap a u64).
const EXTREME: &[i64] = &[
    -1,
    -2,
    -7,
    i64::MIN,
    i64::MAX,
    1 << 20,
    1 << 31,
    (1 << 31) + 1,
    1 << 40,
    1 << 61,
    1 << 62,
    (1 << 62) + 1,
    i64::MAX - 1,
];

const DTYPES: &[wit::Dtype] = &[
    wit::Dtype::F32,
    wit::Dtype::Bf16,
    wit::Dtype::F16,
    wit::Dtype::I64,
    wit::Dtype::U8,
    wit::Dtype::Boolean,
];

/// A generated argument, kept so that a finding can be described after the call consumed it.
#[derive(Clone, Debug)]
enum A {
    Tensor(u32),
    Tensors(Vec<u32>),
    Int(i64),
    Ints(Vec<i64>),
    Float(f64),
    Bool(bool),
    Dtype(wit::Dtype),
    Text(String),
    None,
}

impl A {
    fn lower(&self) -> wit::Arg {
        match self {
            A::Tensor(r) => wit::Arg::Tensor(Resource::new_borrow(*r)),
            A::Tensors(rs) => {
                wit::Arg::Tensors(rs.iter().map(|r| Resource::new_borrow(*r)).collect())
            }
            A::Int(v) => wit::Arg::Int(*v),
            A::Ints(v) => wit::Arg::Ints(v.clone()),
            A::Float(v) => wit::Arg::Float(*v),
            A::Bool(v) => wit::Arg::Boolean(*v),
            A::Dtype(d) => wit::Arg::Dtype(*d),
            A::Text(s) => wit::Arg::Text(s.clone()),
            A::None => wit::Arg::None,
        }
    }
}

/// What the pool knows of a live handle.
#[derive(Clone, Debug)]
struct Live {
    rep: u32,
    shape: Vec<i64>,
    dtype: wit::Dtype,
}

/// One host entry point with its inputs.
#[derive(Clone, Debug)]
enum Input {
    Op(String),
    Call { id: u32, name: String, args: Vec<A> },
    FromF32 { data: Vec<f32>, shape: Vec<i64> },
    FromI64 { data: Vec<i64>, shape: Vec<i64> },
    Item(u32),
    Shape(u32),
    Dtype(u32),
    Drop(u32),
}

#[derive(Default)]
struct Tally {
    executions: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }
}

struct Fuzz {
    rng: Rng,
    state: State,
    pool: Vec<Live>,
    /// Handles dropped (or never issued): they must be refused, never crash.
    dead: Vec<u32>,
    /// A description of every live handle, for reproducing a finding.
    describe: BTreeMap<u32, String>,
}

fn limits() -> Limits {
    Limits {
        fuel: u64::MAX,
        timeout_s: 1e6,
        guest_memory_bytes: 64 << 20,
        tensor_bytes: TENSOR_BYTES,
        max_ops: u64::MAX,
        max_handles: MAX_HANDLES,
    }
}

fn new_state() -> State {
    let config = WorkloadConfig::from_preset("tiny").expect("the tiny preset exists");
    let session = Session::without_windows(&config, Device::Cpu).expect("θ0 of tiny");
    State::new(session, limits())
}

fn code_name(e: &wit::OpError) -> &'static str {
    match e.code {
        wit::ErrorCode::UnknownOp => "unknown-op",
        wit::ErrorCode::BadArguments => "bad-arguments",
        wit::ErrorCode::ShapeMismatch => "shape-mismatch",
        wit::ErrorCode::WrongDtype => "wrong-dtype",
        wit::ErrorCode::OpFailed => "op-failed",
        wit::ErrorCode::Protocol => "protocol",
        wit::ErrorCode::Guest => "guest",
    }
}

impl Fuzz {
    fn new(seed: u64) -> Self {
        let mut f = Self {
            rng: Rng(seed),
            state: new_state(),
            pool: Vec::new(),
            dead: Vec::new(),
            describe: BTreeMap::new(),
        };
        f.seed_pool();
        f
    }

    /// θ0's parameters (host-owned leaves) and a few tensors of every dtype.
    fn seed_pool(&mut self) {
        if let Ok(params) = wl::Host::parameters(&mut self.state) {
            for p in params.into_iter().take(6) {
                let _ = self.adopt(p.value, "a parameter".into());
            }
        }
        for _ in 0..24 {
            self.make_tensor();
        }
    }

    /// Adds a handle the host returned to the pool, after checking that it is a valid tensor.
    fn adopt(&mut self, r: Resource<TensorEntry>, origin: String) -> Result<(), String> {
        let rep = r.rep();
        let shape = wit::HostTensor::shape(&mut self.state, Resource::new_borrow(rep))
            .map_err(|e| format!("a returned handle has no shape: {e:#}"))?;
        let dtype = wit::HostTensor::dtype(&mut self.state, Resource::new_borrow(rep))
            .map_err(|e| format!("a returned handle has no contract dtype: {e:#}"))?;
        if shape.iter().any(|d| *d < 0) {
            return Err(format!("a returned tensor has shape {shape:?}"));
        }
        self.dead.retain(|d| *d != rep);
        self.describe
            .insert(rep, format!("#{rep}: {dtype:?} {shape:?} ({origin})"));
        self.pool.push(Live { rep, shape, dtype });
        Ok(())
    }

    fn drop_rep(&mut self, rep: u32) -> wasmtime::Result<()> {
        let r = wit::HostTensor::drop(&mut self.state, Resource::new_own(rep));
        if r.is_ok() {
            self.pool.retain(|l| l.rep != rep);
            self.dead.push(rep);
            if self.dead.len() > 64 {
                self.dead.remove(0);
            }
        }
        r
    }

    fn trim_pool(&mut self) {
        if self.pool.len() <= POOL {
            return;
        }
        while self.pool.len() > POOL / 2 {
            let i = self.rng.below(self.pool.len() as u64) as usize;
            let rep = self.pool[i].rep;
            if self.drop_rep(rep).is_err() {
                self.pool.swap_remove(i);
            }
        }
    }

    fn small_shape(&mut self) -> Vec<i64> {
        let rank = match self.rng.below(10) {
            0 => 0,
            1..=3 => 1,
            4..=6 => 2,
            7 | 8 => 3,
            _ => self.rng.range(4, 6),
        };
        // Outer-product fodder: [n, 1] and [1, n].
        if rank == 2 && self.rng.chance(20) {
            let n = self.rng.pick(&[64, 1000, MAX_NUMEL]);
            return if self.rng.chance(50) {
                vec![n, 1]
            } else {
                vec![1, n]
            };
        }
        let mut shape: Vec<i64> = (0..rank)
            .map(|_| match self.rng.below(20) {
                0 => 0,
                1..=4 => 1,
                5..=14 => self.rng.range(2, 5),
                _ => self.rng.pick(&[8, 16, 32, 64]),
            })
            .collect();
        while shape.iter().product::<i64>() > MAX_NUMEL {
            let i = self.rng.below(shape.len() as u64) as usize;
            shape[i] = (shape[i] / 2).max(1);
        }
        shape
    }

    fn float_value(&mut self) -> f64 {
        match self.rng.below(20) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => 1e300,
            4 => -1e300,
            5 => 3.4e38,
            6 => -0.0,
            7 => 0.0,
            8 => f64::MIN_POSITIVE,
            9 => self.rng.range(-1000, 1000) as f64,
            _ => (self.rng.next() as f64 / u64::MAX as f64) * 8.0 - 4.0,
        }
    }

    fn index_value(&mut self) -> i64 {
        match self.rng.below(20) {
            0 => self.rng.pick(EXTREME),
            1 => -self.rng.range(1, 4),
            _ => self.rng.range(0, 7),
        }
    }

    /// A new pool tensor: random shape, values and dtype.
    fn make_tensor(&mut self) {
        let shape = self.small_shape();
        let n = shape.iter().product::<i64>() as usize;
        let made = if self.rng.chance(60) {
            let data: Vec<f32> = (0..n).map(|_| self.float_value() as f32).collect();
            wit::Host::from_f32(&mut self.state, data, shape.clone())
        } else {
            let data: Vec<i64> = (0..n).map(|_| self.index_value()).collect();
            wit::Host::from_i64(&mut self.state, data, shape.clone())
        };
        let Ok(Ok(r)) = made else { return };
        let rep = r.rep();
        let _ = self.adopt(r, "made".into());
        // Other dtypes come from a cast, an op like any other.
        if self.rng.chance(40) {
            let dtype = self.rng.pick(DTYPES);
            let id = REGISTRY
                .iter()
                .position(|op| op.name == "to_dtype")
                .unwrap() as u32;
            if let Ok(Ok(outs)) = wit::Host::call(
                &mut self.state,
                id,
                vec![
                    wit::Arg::Tensor(Resource::new_borrow(rep)),
                    wit::Arg::Dtype(dtype),
                ],
            ) {
                for o in outs {
                    let _ = self.adopt(o, format!("#{rep} cast"));
                }
            }
        }
    }

    fn handle(&mut self) -> u32 {
        match self.rng.below(40) {
            0 if !self.dead.is_empty() => self.rng.pick(&self.dead),
            1 => self
                .rng
                .pick(&[0, 1, 4242, 1 << 20, u32::MAX - 1, u32::MAX]),
            _ if !self.pool.is_empty() => {
                self.pool[self.rng.below(self.pool.len() as u64) as usize].rep
            }
            _ => self.rng.next() as u32,
        }
    }

    fn ints(&mut self, near: Option<&Live>) -> Vec<i64> {
        match self.rng.below(10) {
            // A shape or a dim list derived from a tensor's: valid more often than not.
            0..=3 if near.is_some() => {
                let shape = &near.unwrap().shape;
                let mut v = shape.clone();
                match self.rng.below(6) {
                    0 => v.reverse(),
                    1 => v = (0..shape.len() as i64).rev().collect(),
                    2 => {
                        // Expand a size-1 dim, sometimes hugely.
                        if let Some(i) = v.iter().position(|d| *d == 1) {
                            v[i] = self.rng.pick(&[2, 4096, 1 << 20, 1 << 31, 1 << 62]);
                        }
                    }
                    3 => v = vec![-1],
                    4 => v.insert(0, self.rng.pick(&[1, 2, 3, 1 << 16])),
                    _ => {}
                }
                v
            }
            4 => {
                // Many dims.
                let n = self.rng.pick(&[16, 25, 64, 65, 100]);
                (0..n).map(|_| self.rng.range(1, 2)).collect()
            }
            5 => {
                // Shapes whose product is huge or overflows.
                let n = self.rng.range(1, 4);
                (0..n)
                    .map(|_| {
                        if self.rng.chance(70) {
                            self.rng.pick(EXTREME)
                        } else {
                            self.rng.range(0, 4)
                        }
                    })
                    .collect()
            }
            _ => {
                let n = self.rng.range(0, 4);
                (0..n).map(|_| self.index_value()).collect()
            }
        }
    }

    fn int(&mut self, name: &str) -> i64 {
        match name {
            "dim" | "dim0" | "dim1" | "start" | "end" if self.rng.chance(85) => {
                self.rng.range(-4, 4)
            }
            _ => match self.rng.below(10) {
                0 | 1 => self.rng.pick(EXTREME),
                2 => self.rng.range(8, 5000),
                _ => self.rng.range(-2, 6),
            },
        }
    }

    fn einsum_equation(&mut self, tensors: &[u32]) -> String {
        const LETTERS: &[u8] = b"ijklmnab";
        let mut eq = String::new();
        let mut seen = Vec::new();
        for (i, rep) in tensors.iter().enumerate() {
            if i > 0 {
                eq.push(',');
            }
            let rank = self
                .pool
                .iter()
                .find(|l| l.rep == *rep)
                .map_or(2, |l| l.shape.len());
            let ellipsis = self.rng.chance(15);
            if ellipsis {
                eq.push_str("...");
            }
            let explicit = if ellipsis {
                self.rng.below(rank as u64 + 1) as usize
            } else {
                rank
            };
            for _ in 0..explicit {
                let c = self.rng.pick(LETTERS) as char;
                eq.push(c);
                seen.push(c);
            }
        }
        match self.rng.below(6) {
            0 => {}
            1 => eq.push_str("->"),
            2 => {
                eq.push_str("->");
                eq.push_str(self.rng.pick(&["...", "z", "ii", " i "]));
            }
            _ => {
                eq.push_str("->");
                seen.sort_unstable();
                seen.dedup();
                for c in seen {
                    if self.rng.chance(60) {
                        eq.push(c);
                    }
                }
            }
        }
        if self.rng.chance(5) {
            eq = self
                .rng
                .pick(&[
                    "",
                    "->",
                    ",",
                    "...->...",
                    "i,i,i,i->",
                    "é->é",
                    "I,J->IJ",
                    "a b, b c -> a c",
                ])
                .to_string();
        }
        eq
    }

    fn text(&mut self, op: &str, args: &[A]) -> String {
        if op == "einsum" {
            let tensors = args
                .iter()
                .find_map(|a| match a {
                    A::Tensors(ts) => Some(ts.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            return self.einsum_equation(&tensors);
        }
        self.rng
            .pick(&[
                "mean", "sum", "none", "tanh", "prod", "", "MEAN", "amax", "\u{0}", "ünï",
            ])
            .to_string()
    }

    fn arg(&mut self, kind: ParamKind, name: &str, op: &str, sofar: &[A]) -> A {
        let near = match sofar.first() {
            Some(A::Tensor(r)) => self.pool.iter().find(|l| l.rep == *r).cloned(),
            _ => None,
        };
        match kind {
            ParamKind::Tensor => A::Tensor(self.handle()),
            ParamKind::Tensors => {
                let n = match self.rng.below(20) {
                    0 => 0,
                    1 => self.rng.range(8, 40),
                    _ => self.rng.range(1, 3),
                };
                A::Tensors((0..n).map(|_| self.handle()).collect())
            }
            ParamKind::Int => A::Int(self.int(name)),
            ParamKind::Ints => A::Ints(self.ints(near.as_ref())),
            ParamKind::Float => A::Float(self.float_value()),
            ParamKind::Bool => A::Bool(self.rng.chance(50)),
            ParamKind::Dtype => A::Dtype(self.rng.pick(DTYPES)),
            ParamKind::Text => {
                // Fill the tensors first for einsum: the equation follows them.
                A::Text(self.text(op, sofar))
            }
            ParamKind::TensorOrFloat => {
                if self.rng.chance(60) {
                    A::Tensor(self.handle())
                } else {
                    A::Float(self.float_value())
                }
            }
        }
    }

    fn any_arg(&mut self) -> A {
        let kinds = [
            ParamKind::Tensor,
            ParamKind::Tensors,
            ParamKind::Int,
            ParamKind::Ints,
            ParamKind::Float,
            ParamKind::Bool,
            ParamKind::Dtype,
            ParamKind::Text,
        ];
        if self.rng.chance(10) {
            return A::None;
        }
        let k = self.rng.pick(&kinds);
        self.arg(k, "x", "", &[])
    }

    fn call_input(&mut self) -> Input {
        let n = REGISTRY.len() as u32;
        let id = match self.rng.below(50) {
            0 => n + self.rng.below(3) as u32,
            1 => u32::MAX,
            _ => self.rng.below(n as u64) as u32,
        };
        let Some(op) = REGISTRY.get(id as usize) else {
            let args = (0..self.rng.below(3)).map(|_| self.any_arg()).collect();
            return Input::Call {
                id,
                name: "(none)".into(),
                args,
            };
        };
        let mut args: Vec<A>;
        if self.rng.chance(8) {
            // Anything at all.
            let len = self.rng.below(8);
            args = (0..len).map(|_| self.any_arg()).collect();
        } else {
            // The signature, with optional arguments left out or `none`, and now and then
            // a wrong kind, a missing argument or one too many.
            let mut params: Vec<(usize, _)> = op.params.iter().copied().enumerate().collect();
            // einsum's equation depends on its tensors: generate them first.
            if op.name == "einsum" {
                params.reverse();
            }
            let mut slots: Vec<Option<A>> = vec![None; op.params.len()];
            for (i, p) in params {
                let sofar: Vec<A> = slots.iter().flatten().cloned().collect();
                let v = if p.optional && self.rng.chance(35) {
                    A::None
                } else if self.rng.chance(3) {
                    self.any_arg()
                } else {
                    self.arg(p.kind, p.name, op.name, &sofar)
                };
                slots[i] = Some(v);
            }
            args = slots.into_iter().map(|a| a.unwrap_or(A::None)).collect();
            while matches!(args.last(), Some(A::None)) && self.rng.chance(70) {
                args.pop();
            }
            if self.rng.chance(3) && !args.is_empty() {
                args.pop();
            }
            if self.rng.chance(2) {
                args.push(self.any_arg());
            }
        }
        Input::Call {
            id,
            name: op.name.to_string(),
            args,
        }
    }

    fn input(&mut self) -> Input {
        match self.rng.below(100) {
            0..=2 => {
                let name = if self.rng.chance(70) {
                    REGISTRY[self.rng.below(REGISTRY.len() as u64) as usize]
                        .name
                        .to_string()
                } else {
                    self.rng
                        .pick(&[
                            "",
                            "frobnicate",
                            "MATMUL",
                            "matmul ",
                            "add\0",
                            "ünï",
                            "__proto__",
                        ])
                        .to_string()
                };
                Input::Op(name)
            }
            3..=5 => {
                let shape = if self.rng.chance(50) {
                    self.small_shape()
                } else {
                    self.ints(None)
                };
                let n = match self.rng.below(4) {
                    0 => self.rng.below(10) as usize,
                    _ => shape
                        .iter()
                        .fold(1i64, |n, d| n.saturating_mul((*d).clamp(0, MAX_NUMEL)))
                        .clamp(0, MAX_NUMEL) as usize,
                };
                if self.rng.chance(50) {
                    let data = (0..n).map(|_| self.float_value() as f32).collect();
                    Input::FromF32 { data, shape }
                } else {
                    let data = (0..n).map(|_| self.index_value()).collect();
                    Input::FromI64 { data, shape }
                }
            }
            6..=7 => Input::Item(self.handle()),
            8 => Input::Shape(self.handle()),
            9 => Input::Dtype(self.handle()),
            10..=12 => {
                let rep = self.handle();
                Input::Drop(rep)
            }
            _ => self.call_input(),
        }
    }

    fn describe(&self, input: &Input) -> String {
        let mut s = match input {
            Input::Call { id, name, args } => format!("call {name} (id {id}) with {args:?}"),
            other => format!("{other:?}"),
        };
        let mut reps = Vec::new();
        if let Input::Call { args, .. } = input {
            for a in args {
                match a {
                    A::Tensor(r) => reps.push(*r),
                    A::Tensors(rs) => reps.extend(rs),
                    _ => {}
                }
            }
        }
        if let Input::Item(r) | Input::Shape(r) | Input::Dtype(r) | Input::Drop(r) = input {
            reps.push(*r);
        }
        reps.sort_unstable();
        reps.dedup();
        for r in reps {
            let what = self
                .describe
                .get(&r)
                .filter(|_| self.pool.iter().any(|l| l.rep == r))
                .cloned()
                .unwrap_or_else(|| format!("#{r}: not live"));
            let _ = write!(s, "\n    {what}");
        }
        s
    }

    /// Runs one input; `Err` is a finding (an invalid result).
    fn run(&mut self, input: Input, tally: &mut Tally) -> Result<(), String> {
        let s = &mut self.state;
        // A breach ends a guest's run; here the store lives on, so forget it after counting.
        let outcome = |r: Result<(), String>, tally: &mut Tally, s: &mut State| match r {
            Ok(()) => {
                tally.ok += 1;
            }
            Err(code) => {
                let code = match s.breach.take() {
                    Some(f) => f.code.as_str(),
                    None => code,
                };
                tally.error(code);
            }
        };
        let trap = |e: wasmtime::Error| format!("trap: {}", short(&e));
        match input {
            Input::Op(name) => {
                let r = wit::Host::op(s, name.clone());
                match r {
                    Ok(Ok(id)) => {
                        if REGISTRY.get(id as usize).map(|o| o.name) != Some(name.as_str()) {
                            return Err(format!("op({name:?}) resolved to id {id}"));
                        }
                        outcome(Ok(()), tally, s)
                    }
                    Ok(Err(e)) => outcome(Err(code_name(&e).into()), tally, s),
                    Err(e) => outcome(Err(trap(e)), tally, s),
                }
            }
            Input::Call { id, args, .. } => {
                let bound = s.bound_of(id, args.iter().map(A::lower).collect());
                let lowered = args.iter().map(A::lower).collect();
                match wit::Host::call(s, id, lowered) {
                    Ok(Ok(outs)) => {
                        outcome(Ok(()), tally, s);
                        let origin = format!("output of op {id}");
                        let first = self.pool.len();
                        for o in outs {
                            self.adopt(o, origin.clone())?;
                        }
                        check_bound(id, bound, &self.pool[first..])?;
                    }
                    Ok(Err(e)) => {
                        if e.message.is_empty() {
                            return Err("an op error with an empty message".into());
                        }
                        outcome(Err(code_name(&e).into()), tally, s)
                    }
                    Err(e) => outcome(Err(trap(e)), tally, s),
                }
            }
            Input::FromF32 { data, shape } => match wit::Host::from_f32(s, data, shape) {
                Ok(Ok(r)) => {
                    outcome(Ok(()), tally, s);
                    self.adopt(r, "from-f32".into())?;
                }
                Ok(Err(e)) => outcome(Err(code_name(&e).into()), tally, s),
                Err(e) => outcome(Err(trap(e)), tally, s),
            },
            Input::FromI64 { data, shape } => match wit::Host::from_i64(s, data, shape) {
                Ok(Ok(r)) => {
                    outcome(Ok(()), tally, s);
                    self.adopt(r, "from-i64".into())?;
                }
                Ok(Err(e)) => outcome(Err(code_name(&e).into()), tally, s),
                Err(e) => outcome(Err(trap(e)), tally, s),
            },
            Input::Item(rep) => match wit::Host::item(s, Resource::new_borrow(rep)) {
                Ok(Ok(_)) => outcome(Ok(()), tally, s),
                Ok(Err(e)) => outcome(Err(code_name(&e).into()), tally, s),
                Err(e) => outcome(Err(trap(e)), tally, s),
            },
            Input::Shape(rep) => match wit::HostTensor::shape(s, Resource::new_borrow(rep)) {
                Ok(shape) if shape.iter().all(|d| *d >= 0) => outcome(Ok(()), tally, s),
                Ok(shape) => return Err(format!("shape() gave {shape:?}")),
                Err(e) => outcome(Err(trap(e)), tally, s),
            },
            Input::Dtype(rep) => match wit::HostTensor::dtype(s, Resource::new_borrow(rep)) {
                Ok(_) => outcome(Ok(()), tally, s),
                Err(e) => outcome(Err(trap(e)), tally, s),
            },
            Input::Drop(rep) => match self.drop_rep(rep) {
                Ok(()) => outcome(Ok(()), tally, &mut self.state),
                Err(e) => outcome(Err(trap(e)), tally, &mut self.state),
            },
        }
        Ok(())
    }
}

/// What the host charges for a tensor: an empty one as if its 0-sized dims were 1.
fn bytes_of(l: &Live) -> u64 {
    let elt = match l.dtype {
        wit::Dtype::F32 => 4,
        wit::Dtype::Bf16 | wit::Dtype::F16 => 2,
        wit::Dtype::I64 => 8,
        wit::Dtype::U8 | wit::Dtype::Boolean => 1,
    };
    l.shape
        .iter()
        .fold(elt, |n, &d| n.saturating_mul(d.max(1) as u64))
}

/// The outputs of a successful call fit the bound the host checked before running it: the
/// bound is an upper bound on what they are charged. Views allocate nothing, so ops whose
/// outputs may share their input's storage (and are charged in full all the same) are left
/// out of the byte check.
fn check_bound(id: u32, bound: Option<Bound>, outputs: &[Live]) -> Result<(), String> {
    let op = &REGISTRY[id as usize];
    let Some(bound) = bound else {
        return Err(format!("{} ran, but its arguments have no bound", op.name));
    };
    if outputs.len() as u64 > bound.tensors {
        return Err(format!(
            "{} returned {} tensors, past its bound of {}",
            op.name,
            outputs.len(),
            bound.tensors
        ));
    }
    let may_alias = matches!(op.alloc, Alloc::View | Alloc::Nothing)
        || ["contiguous", "reshape", "flatten", "split", "chunk"].contains(&op.name);
    let made: u64 = outputs.iter().map(bytes_of).sum();
    match bound.bytes {
        _ if may_alias => Ok(()),
        Some(b) if made <= b => Ok(()),
        b => Err(format!(
            "{} allocated {made} bytes ({:?}), past its bound of {b:?} bytes",
            op.name,
            outputs
                .iter()
                .map(|l| (l.dtype, l.shape.clone()))
                .collect::<Vec<_>>()
        )),
    }
}

/// The kind of a run-ending error, without the parts that vary (sizes, handles).
fn short(e: &wasmtime::Error) -> String {
    let text = format!("{e}");
    if text.contains("not present") || text.contains("handle") {
        "bad-handle".into()
    } else {
        text.split(|c: char| c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .take(40)
            .collect()
    }
}

static PANIC: Mutex<Option<String>> = Mutex::new(None);

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn random_op_calls_end_in_errors_or_valid_tensors() {
    let secs = env_u64("CRUSADES_FUZZ_SECS").unwrap_or(20);
    let seed = match std::env::var("CRUSADES_FUZZ_SEED").as_deref() {
        Ok("clock") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        _ => env_u64("CRUSADES_FUZZ_SEED").unwrap_or(0x5eed_c0de),
    };
    let budget = Duration::from_secs(secs);
    // Every input before it runs: what a crash that no test can catch (a segfault in
    // libtorch) was doing is then the last line printed.
    let trace = std::env::var_os("CRUSADES_FUZZ_TRACE").is_some();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Ok(mut p) = PANIC.lock() {
            *p = Some(format!("{msg}{at}"));
        }
    }));

    let mut fuzz = Fuzz::new(seed);
    let mut tally = Tally::default();
    let mut findings: Vec<String> = Vec::new();
    let start = Instant::now();
    let mut iteration: u64 = 0;
    while start.elapsed() < budget && findings.len() < 20 {
        iteration += 1;
        if fuzz.pool.len() < 8 || fuzz.rng.chance(4) {
            fuzz.make_tensor();
        }
        fuzz.trim_pool();
        let input = fuzz.input();
        let description = fuzz.describe(&input);
        if trace {
            eprintln!("fuzz #{iteration}: {description}");
        }
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| fuzz.run(input, &mut tally)));
        let took = t0.elapsed();
        tally.executions += 1;
        let finding = match result {
            Ok(Ok(())) if took > SLOW => Some(format!("took {took:.1?}")),
            Ok(Ok(())) => None,
            Ok(Err(invalid)) => Some(format!("invalid result: {invalid}")),
            Err(_) => {
                let msg = PANIC.lock().ok().and_then(|mut p| p.take());
                Some(format!("panicked: {}", msg.unwrap_or_default()))
            }
        };
        if let Some(what) = finding {
            let panicked = what.starts_with("panicked");
            findings.push(format!(
                "[seed {seed}, iteration {iteration}] {what}\n  input: {description}"
            ));
            if panicked {
                // The store may be inconsistent after a panic: start over from a fresh one.
                fuzz = Fuzz {
                    rng: Rng(fuzz.rng.next()),
                    ..Fuzz::new(seed)
                };
            }
        }
        if iteration % 2000 == 0 && fuzz.rng.chance(10) {
            // A fresh store now and then: θ0 again, an empty table, no leftover no-grad scope.
            let rng = Rng(fuzz.rng.next());
            fuzz = Fuzz {
                rng,
                ..Fuzz::new(seed)
            };
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    std::panic::set_hook(default_hook);
    let errors: u64 = tally.errors.values().sum();
    let by_code: Vec<String> = tally
        .errors
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    eprintln!(
        "fuzz: {} executions in {elapsed:.1} s, seed {seed} ({} ok, {errors} errors by code: {})",
        tally.executions,
        tally.ok,
        by_code.join(", ")
    );
    assert!(
        findings.is_empty(),
        "{} finding(s); replay with CRUSADES_FUZZ_SEED={seed}:\n{}",
        findings.len(),
        findings.join("\n")
    );
    // The run must have exercised every outcome, or the generator has gone blind.
    assert!(
        tally.ok > 0 && errors > 0,
        "ok {} errors {errors}",
        tally.ok
    );
}
