//! The host's op-call path against the inputs the registry fuzz (tests/fuzz_registry.rs) found
//! or was built to find: outputs too large to allocate, sizes that overflow, handle floods,
//! and calls libtorch refuses in ways tch does not turn into errors. Each case is driven
//! through `State` as a guest's call would be, and must end in an op error or a limit breach
//! with its own code, quickly.

use std::time::{Duration, Instant};

use crusades_reference::config::WorkloadConfig;
use crusades_sandbox::host::{wit, State, TensorEntry};
use crusades_sandbox::session::Session;
use crusades_sandbox::{FailureCode, Limits};
use tch::Device;
use wasmtime::component::Resource;

const TENSOR_BYTES: u64 = 256 << 20;

fn state() -> State {
    let config = WorkloadConfig::from_preset("tiny").unwrap();
    let session = Session::without_windows(&config, Device::Cpu).unwrap();
    State::new(
        session,
        Limits {
            tensor_bytes: TENSOR_BYTES,
            max_handles: 10_000,
            ..Limits::default()
        },
    )
}

fn t(r: &Resource<TensorEntry>) -> wit::Arg {
    wit::Arg::Tensor(Resource::new_borrow(r.rep()))
}

/// Runs op `name`; its outputs, or the op error.
fn call(
    s: &mut State,
    name: &str,
    args: Vec<wit::Arg>,
) -> wasmtime::Result<Result<Vec<Resource<TensorEntry>>, wit::OpError>> {
    let id = wit::Host::op(s, name.into())?.expect("a registered op");
    wit::Host::call(s, id, args)
}

fn one(s: &mut State, name: &str, args: Vec<wit::Arg>) -> Resource<TensorEntry> {
    let mut out = call(s, name, args)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
        .unwrap_or_else(|e| panic!("{name}: {}", e.message));
    out.remove(0)
}

fn ones(s: &mut State, shape: &[i64]) -> Resource<TensorEntry> {
    one(s, "ones", vec![wit::Arg::Ints(shape.to_vec())])
}

/// The call must end the run by `code` at once, with a message naming the op and the limit.
fn breaches(
    s: &mut State,
    name: &str,
    args: Vec<wit::Arg>,
    code: FailureCode,
    limit: &str,
) -> String {
    let start = Instant::now();
    let r = call(s, name, args);
    let took = start.elapsed();
    assert!(r.is_err(), "{name} was not stopped");
    let f = s.breach.take().expect("the breach is recorded");
    assert_eq!(f.code, code, "{name}: {f}");
    assert!(f.message.contains(name) && f.message.contains(limit), "{f}");
    assert!(took < Duration::from_secs(2), "{name} took {took:?}");
    f.message
}

#[test]
fn an_output_past_the_tensor_byte_limit_ends_the_run_before_it_is_allocated() {
    const N: i64 = 1 << 20;
    let limit = TENSOR_BYTES.to_string();
    let mem = FailureCode::TensorMemoryLimit;

    let mut s = state();
    let (column, row) = (ones(&mut s, &[N, 1]), ones(&mut s, &[1, N]));
    // 8 MiB of inputs, a 4 TiB product.
    let m = breaches(&mut s, "matmul", vec![t(&column), t(&row)], mem, &limit);
    assert!(
        m.contains(&(4u64 << 40).to_string()),
        "the bound is named: {m}"
    );
    breaches(&mut s, "add", vec![t(&column), t(&row)], mem, &limit);
    breaches(&mut s, "mul", vec![t(&row), t(&column)], mem, &limit);
    breaches(
        &mut s,
        "repeat",
        vec![t(&row), wit::Arg::Ints(vec![N, 1])],
        mem,
        &limit,
    );

    let v = ones(&mut s, &[1 << 14]);
    let three = wit::Arg::Tensors((0..3).map(|_| Resource::new_borrow(v.rep())).collect());
    breaches(
        &mut s,
        "einsum",
        vec![wit::Arg::Text("i,j,k->ijk".into()), three],
        mem,
        &limit,
    );

    breaches(
        &mut s,
        "zeros",
        vec![wit::Arg::Ints(vec![1 << 40])],
        mem,
        &limit,
    );
    let m = breaches(
        &mut s,
        "zeros",
        vec![wit::Arg::Ints(vec![1 << 40, 1 << 40])],
        mem,
        &limit,
    );
    assert!(m.contains("overflow"), "{m}");
    // An empty tensor with huge other dims costs nothing to hold but a lot to work on.
    breaches(
        &mut s,
        "zeros",
        vec![wit::Arg::Ints(vec![0, 1 << 40])],
        mem,
        &limit,
    );

    // A view is charged in full when its handle is made, and a copy of it before it is made.
    let x = ones(&mut s, &[1]);
    let view = one(
        &mut s,
        "expand",
        vec![t(&x), wit::Arg::Ints(vec![40 << 20])],
    );
    breaches(&mut s, "contiguous", vec![t(&view)], mem, &limit);
    // 2⁶² f32 elements are 2⁶⁴ bytes: a count that wraps to 0 in 64 bits.
    let r = call(&mut s, "expand", vec![t(&x), wit::Arg::Ints(vec![1 << 62])]);
    assert!(r.is_err());
    assert_eq!(s.breach.take().map(|f| f.code), Some(mem));

    // What fits still runs, and the run goes on.
    let small = ones(&mut s, &[1 << 10, 1]);
    let wide = ones(&mut s, &[1, 1 << 10]);
    let outer = one(&mut s, "matmul", vec![t(&small), t(&wide)]);
    assert_eq!(
        wit::HostTensor::shape(&mut s, Resource::new_borrow(outer.rep())).unwrap(),
        [1 << 10, 1 << 10]
    );
}

#[test]
fn a_flood_of_views_hits_the_handle_limit_before_it_is_made() {
    let mut s = state();
    let empty = one(&mut s, "zeros", vec![wit::Arg::Ints(vec![0])]);
    // libtorch returns one view per chunk of an empty dim: 2⁴⁰ of them.
    breaches(
        &mut s,
        "chunk",
        vec![t(&empty), wit::Arg::Int(1 << 40)],
        FailureCode::HandleLimit,
        "max_handles",
    );
    let x = ones(&mut s, &[1 << 20]);
    breaches(
        &mut s,
        "split",
        vec![t(&x), wit::Arg::Int(1)],
        FailureCode::HandleLimit,
        "max_handles",
    );
    // A list naming more tensors than the guest may hold is refused before it is resolved.
    let list = wit::Arg::Tensors((0..20_000).map(|_| Resource::new_borrow(x.rep())).collect());
    let e = call(&mut s, "cat", vec![list]).unwrap().unwrap_err();
    assert_eq!(e.code, wit::ErrorCode::BadArguments, "{}", e.message);
}

#[test]
fn calls_libtorch_refuses_are_op_errors() {
    let mut s = state();
    let ints = wit::Host::from_i64(&mut s, vec![1, 2], vec![2])
        .unwrap()
        .unwrap();
    let floats = ones(&mut s, &[2]);
    let refused = |s: &mut State, name: &str, args: Vec<wit::Arg>| {
        let e = call(s, name, args)
            .unwrap_or_else(|e| panic!("{name} ended the run: {e:#}"))
            .err()
            .unwrap_or_else(|| panic!("{name} ran"));
        assert!(!e.message.is_empty());
        e.code
    };
    // Each of these panicked inside tch (its scalar wrappers unwrap libtorch's error).
    let op_failed = wit::ErrorCode::OpFailed;
    assert_eq!(
        refused(&mut s, "mul_", vec![t(&ints), wit::Arg::Float(0.5)]),
        op_failed
    );
    assert_eq!(
        refused(&mut s, "arange", vec![wit::Arg::Int(-1)]),
        op_failed
    );
    assert_eq!(
        refused(
            &mut s,
            "norm",
            vec![t(&floats), wit::Arg::Float(3.0), wit::Arg::Ints(vec![7])]
        ),
        op_failed
    );
    assert_eq!(
        refused(
            &mut s,
            "masked_fill",
            vec![t(&floats), t(&floats), wit::Arg::Float(0.0)]
        ),
        op_failed
    );
    // This one crashed the process (SIGSEGV in libtorch's autograd engine).
    let w = ones(&mut s, &[2]);
    call(&mut s, "requires_grad_", vec![t(&w)])
        .unwrap()
        .unwrap();
    assert_eq!(
        refused(
            &mut s,
            "autograd_grad",
            vec![
                wit::Arg::Tensors(vec![Resource::new_borrow(floats.rep())]),
                wit::Arg::Tensors(vec![Resource::new_borrow(w.rep())]),
            ]
        ),
        wit::ErrorCode::BadArguments
    );
    // libtorch makes a tensor of negative size of this.
    let scalar = one(&mut s, "sum", vec![t(&floats)]);
    assert_eq!(
        refused(
            &mut s,
            "expand",
            vec![t(&scalar), wit::Arg::Ints(vec![-2, 0])]
        ),
        wit::ErrorCode::BadArguments
    );
    assert!(s.breach.is_none());
}
