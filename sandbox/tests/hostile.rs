//! Hostile and malformed guests: each trips one limit or breaks one rule, and each gives its
//! own failure code and a message that names the problem. The host (this process) lives on.

mod common;

use std::time::{Duration, Instant};

use crusades_reference::config::WorkloadConfig;
use crusades_sandbox::runner::Sandbox;
use crusades_sandbox::session::Session;
use crusades_sandbox::{Failure, FailureCode, Limits};
use tch::Device;

fn tiny() -> WorkloadConfig {
    WorkloadConfig::from_preset("tiny").unwrap()
}

fn small_limits() -> Limits {
    Limits {
        fuel: 200_000_000,
        timeout_s: 20.0,
        guest_memory_bytes: 64 << 20,
        tensor_bytes: 256 << 20,
        max_ops: 100_000,
        max_handles: 10_000,
    }
}

/// Runs guest `name` on θ0 of tiny with no windows; returns the failure and the time taken.
fn fail(name: &str, limits: Limits) -> (Failure, Duration) {
    let sandbox = Sandbox::new().unwrap();
    let compiled = sandbox
        .compile(&common::guest(name))
        .unwrap_or_else(|f| panic!("{name}: {f}"));
    let session = Session::without_windows(&tiny(), Device::Cpu).unwrap();
    let start = Instant::now();
    let Err(failure) = sandbox.run(&compiled, session, limits) else {
        panic!("{name} was expected to fail")
    };
    (failure, start.elapsed())
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let (f, took) = fail("spin", small_limits());
    assert_eq!(f.code, FailureCode::FuelExhausted, "{f}");
    assert!(f.message.contains("fuel"), "{f}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn an_endless_loop_with_fuel_to_spare_meets_the_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout_s: 1.0,
        ..small_limits()
    };
    let (f, took) = fail("spin", limits);
    assert_eq!(f.code, FailureCode::DeadlineExceeded, "{f}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "took {took:?}"
    );
}

#[test]
fn a_memory_grow_bomb_hits_the_guest_memory_cap() {
    let (f, _) = fail("memory-bomb", small_limits());
    assert_eq!(f.code, FailureCode::GuestMemoryLimit, "{f}");
    assert!(f.message.contains("guest_memory_bytes"), "{f}");
}

#[test]
fn a_tensor_allocation_bomb_hits_the_tensor_byte_cap() {
    let (f, _) = fail("tensor-bomb", small_limits());
    assert_eq!(f.code, FailureCode::TensorMemoryLimit, "{f}");
    assert!(f.message.contains("tensor_bytes"), "{f}");
}

#[test]
fn a_huge_output_shape_hits_the_tensor_byte_cap_before_it_is_allocated() {
    let (f, took) = fail("shape-bomb", small_limits());
    assert_eq!(f.code, FailureCode::TensorMemoryLimit, "{f}");
    assert!(
        f.message.contains("matmul") && f.message.contains("tensor_bytes"),
        "{f}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_handle_leak_hits_the_handle_cap() {
    let (f, _) = fail("handle-leak", small_limits());
    assert_eq!(f.code, FailureCode::HandleLimit, "{f}");
    assert!(f.message.contains("10000"), "{f}");
}

#[test]
fn an_op_flood_hits_the_op_cap() {
    let (f, _) = fail("op-flood", small_limits());
    assert_eq!(f.code, FailureCode::OpLimit, "{f}");
    assert!(f.message.contains("100000"), "{f}");
}

#[test]
fn a_panic_is_a_guest_trap() {
    let (f, _) = fail("panic", small_limits());
    assert_eq!(f.code, FailureCode::GuestTrap, "{f}");
}

#[test]
fn bad_op_arguments_carry_their_codes_to_the_run() {
    let (f, _) = fail("shape-mismatch", small_limits());
    assert_eq!(f.code, FailureCode::ShapeMismatch, "{f}");
    assert!(
        f.message.contains("matmul") && f.message.contains("[2, 3]"),
        "{f}"
    );
    let (f, _) = fail("wrong-dtype", small_limits());
    assert_eq!(f.code, FailureCode::WrongDtype, "{f}");
    assert!(
        f.message.contains("embedding") && f.message.contains("i64"),
        "{f}"
    );
    let (f, _) = fail("unknown-op", small_limits());
    assert_eq!(f.code, FailureCode::UnknownOp, "{f}");
    assert!(f.message.contains("frobnicate"), "{f}");
}

#[test]
fn stale_and_forged_handles_are_refused() {
    for guest in ["stale-handle", "forged-handle"] {
        let (f, _) = fail(guest, small_limits());
        assert_eq!(f.code, FailureCode::BadHandle, "{guest}: {f}");
    }
}

fn refused(bytes: &[u8]) -> Failure {
    match Sandbox::new().unwrap().compile(bytes) {
        Ok(_) => panic!("the sandbox accepted it"),
        Err(f) => f,
    }
}

#[test]
fn imports_outside_the_contract_are_refused_by_name() {
    let f = refused(&common::guest("wasi-imports"));
    assert_eq!(f.code, FailureCode::ForbiddenImport, "{f}");
    for name in [
        "wasi:clocks/monotonic-clock@0.2.6",
        "wasi:filesystem/preopens@0.2.6",
        "wasi:sockets/tcp@0.2.6",
    ] {
        assert!(f.message.contains(name), "{name} not named: {f}");
    }
}

#[test]
fn invalid_modules_are_refused_with_their_codes() {
    assert_eq!(refused(b"#!/bin/sh\necho hi\n").code, FailureCode::NotWasm);
    assert_eq!(refused(b"").code, FailureCode::NotWasm);
    let core = b"\0asm\x01\0\0\0";
    let f = refused(core);
    assert_eq!(f.code, FailureCode::CoreModule, "{f}");
    assert!(f.message.contains("crusades build"), "{f}");
    let mut truncated = common::guest("panic");
    truncated.truncate(truncated.len() / 2);
    assert_eq!(refused(&truncated).code, FailureCode::InvalidComponent);
    let f = refused(&common::guest("wrong-world"));
    assert_eq!(f.code, FailureCode::WrongWorld, "{f}");
    let f = refused(&common::guest("no-export"));
    assert_eq!(f.code, FailureCode::WrongWorld, "{f}");
    assert!(f.message.contains("run"), "{f}");
}

#[test]
fn the_host_survives_a_failed_run_and_runs_again() {
    let sandbox = Sandbox::new().unwrap();
    let compiled = sandbox.compile(&common::guest("op-flood")).unwrap();
    for _ in 0..2 {
        let session = Session::without_windows(&tiny(), Device::Cpu).unwrap();
        let f = sandbox
            .run(&compiled, session, small_limits())
            .err()
            .unwrap();
        assert_eq!(f.code, FailureCode::OpLimit);
    }
}
