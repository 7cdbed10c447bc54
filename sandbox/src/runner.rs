//! Compiling a submission and running it once: checks at load time (is it a component, does it
//! import only the contract, does it export `run`), a fresh store per run with every limit set,
//! the clock around the guest's entry call, and the failure code when anything goes wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, Trap};

use crate::clock::{Clock, RegionTime};
use crate::failure::{Failure, FailureCode};
use crate::host::{code_of, State, Submission, SubmissionPre, EPOCH_TICK};
use crate::limits::Limits;
use crate::session::Session;

/// The interfaces a submission may import: the contract's, at its version.
pub fn allowed_imports() -> [String; 2] {
    let v = crate::CONTRACT_VERSION;
    [
        format!("crusades:submission/tensors@{v}"),
        format!("crusades:submission/workload@{v}"),
    ]
}

/// The engine and the linker, which holds only the contract: no WASI, nothing else.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
}

/// A submission that passed every load-time check, ready to instantiate.
pub struct Compiled {
    pre: SubmissionPre<State>,
    pub sha256: String,
    pub bytes: usize,
    pub compile_s: f64,
}

/// What a successful guest call leaves behind.
pub struct GuestRun {
    pub state: State,
    /// The entry call to its return, the device synchronised.
    pub time: RegionTime,
    pub instantiate_s: f64,
}

/// Encodes a core module built with wit-bindgen (for wasm32-unknown-unknown) as a component,
/// from the `component-type` section wit-bindgen embeds. The result imports only what the
/// module uses.
pub fn encode_component(module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| format!("{e:#}"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The cheap test before any engine starts: WebAssembly at all, and a component rather than a
/// core module or an unknown layer. The validator's fetcher makes it on every download.
pub fn check_header(bytes: &[u8]) -> Result<(), Failure> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Failure::new(
            FailureCode::NotWasm,
            "this is not a WebAssembly binary (no \\0asm header); build a submission with `crusades build DIR`",
        ));
    }
    match bytes[6..8] {
        [1, 0] => Ok(()),
        [0, 0] => Err(Failure::new(
            FailureCode::CoreModule,
            "this is a core WebAssembly module, not a component; `crusades build DIR` encodes a crate's module as a component",
        )),
        _ => Err(Failure::new(
            FailureCode::NotWasm,
            format!(
                "unknown WebAssembly layer {:#04x}{:02x}; build the submission with `crusades build DIR`",
                bytes[7], bytes[6]
            ),
        )),
    }
}

impl Sandbox {
    pub fn new() -> Result<Self, Failure> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config)
            .map_err(|e| Failure::internal(format!("cannot start wasmtime: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        Submission::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| Failure::internal(format!("cannot link the contract: {e:#}")))?;
        Ok(Self { engine, linker })
    }

    /// Every check that needs no store: the bytes are a component, its imports are the
    /// contract's and nothing else, and it exports the contract's `run`.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, Failure> {
        check_header(bytes)?;
        let start = Instant::now();
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            Failure::new(
                FailureCode::InvalidComponent,
                format!("the component does not validate or compile: {e:#}"),
            )
        })?;
        self.finish(component, bytes, start.elapsed().as_secs_f64())
    }

    /// Compiles `bytes` to machine code that [`Sandbox::load_precompiled`] can load later,
    /// after the same checks as [`Sandbox::compile`].
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, Failure> {
        self.compile(bytes)?;
        self.engine.precompile_component(bytes).map_err(|e| {
            Failure::new(
                FailureCode::InvalidComponent,
                format!("the component does not compile: {e:#}"),
            )
        })
    }

    /// A key for precompiled artifacts: two engines with the same key load each other's.
    pub fn precompile_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Loads what [`Sandbox::precompile`] made from `bytes` (the component itself, which
    /// still identifies the submission), with the same load-time checks as a fresh compile.
    /// The artifact is machine code: only the harness's own cache may be handed in here.
    pub fn load_precompiled(
        &self,
        bytes: &[u8],
        artifact: &std::path::Path,
    ) -> Result<Compiled, Failure> {
        check_header(bytes)?;
        let start = Instant::now();
        // SAFETY: the artifact was written by `precompile` of an engine with the same
        // compatibility key (it is stored under that key) into the harness's cache; wasmtime
        // itself re-checks the engine configuration and version in its header.
        let component =
            unsafe { Component::deserialize_file(&self.engine, artifact) }.map_err(|e| {
                Failure::internal(format!(
                    "the compile cache entry {} is unusable ({e:#}); delete it to recompile",
                    artifact.display()
                ))
            })?;
        self.finish(component, bytes, start.elapsed().as_secs_f64())
    }

    fn finish(
        &self,
        component: Component,
        bytes: &[u8],
        compile_s: f64,
    ) -> Result<Compiled, Failure> {
        let sha256 = sha256_hex(bytes);
        let allowed = allowed_imports();
        let ty = component.component_type();
        let foreign: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .filter(|name| !allowed.contains(name))
            .collect();
        if !foreign.is_empty() {
            return Err(Failure::new(
                FailureCode::ForbiddenImport,
                format!(
                    "the submission imports {}, outside the contract; a submission may import only {} (build for wasm32-unknown-unknown, which needs no WASI)",
                    foreign.join(", "),
                    allowed.join(" and ")
                ),
            ));
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            Failure::new(
                FailureCode::ForbiddenImport,
                format!(
                    "the submission's imports do not match the contract {}: {e:#}",
                    crate::CONTRACT_VERSION
                ),
            )
        })?;
        let pre = SubmissionPre::new(pre).map_err(|e| {
            Failure::new(
                FailureCode::WrongWorld,
                format!(
                    "the submission does not export the contract's `run: func() -> result<_, op-error>` ({e:#}); is it built against sandbox/wit/crusades.wit?"
                ),
            )
        })?;
        Ok(Compiled {
            pre,
            sha256,
            bytes: bytes.len(),
            compile_s,
        })
    }

    /// Instantiates `compiled` in a fresh store and calls `run`, timed.
    pub fn run(
        &self,
        compiled: &Compiled,
        session: Session,
        limits: Limits,
    ) -> Result<GuestRun, Failure> {
        let device = session.device;
        let mut store = Store::new(&self.engine, State::new(session, limits));
        store.limiter(|s| &mut s.limiter);
        // wasmtime caps a store's live component handles (100,000 by default), and that trap
        // would read as a stale handle. Set it above max_handles, with room for the borrows of
        // one call's arguments (never more than the handles owned), so ours is what ends it.
        store.set_max_component_handles(
            usize::try_from(limits.max_handles)
                .unwrap_or(usize::MAX)
                .saturating_mul(2)
                .saturating_add(1024),
        );
        store
            .set_fuel(limits.fuel)
            .map_err(|e| Failure::internal(format!("cannot set fuel: {e:#}")))?;
        let ticks = (limits.timeout().as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (self.engine.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
        };
        let start = Instant::now();
        let instance = compiled.pre.instantiate(&mut store);
        let instantiate_s = start.elapsed().as_secs_f64();
        let result = instance.map(|instance| {
            let clock = Clock::start(device);
            store.data_mut().start_clock(clock.started());
            let result = instance.call_run(&mut store);
            let (time, end) = clock.stop();
            let phase = store.data().current_phase();
            store.data_mut().switch_phase(phase, end);
            (result, time)
        });
        stop.store(true, Ordering::Relaxed);
        let _ = ticker.join();
        let (result, time) = match result {
            Ok(r) => r,
            Err(e) => {
                return Err(Failure::new(
                    FailureCode::GuestTrap,
                    format!("instantiation failed: {e:#}"),
                ))
            }
        };
        let state = store.into_data();
        match result {
            Ok(Ok(())) => {
                let (done, total) = (state.session.submitted.len(), state.session.batches.len());
                if done != total {
                    return Err(Failure::new(
                        FailureCode::Protocol,
                        format!("run returned after submitting {done} of {total} windows"),
                    ));
                }
                Ok(GuestRun {
                    state,
                    time,
                    instantiate_s,
                })
            }
            Ok(Err(e)) => {
                let code = code_of(&e);
                Err(match &state.last_op_error {
                    Some(last) if last.code == code && last.message == e.message => {
                        Failure::new(code.into(), e.message)
                    }
                    _ => Failure::new(
                        FailureCode::GuestError,
                        format!(
                            "the submission returned an error: {} ({})",
                            e.message,
                            code.as_str()
                        ),
                    ),
                })
            }
            Err(e) => Err(classify_trap(&state, e)),
        }
    }
}

/// The failure behind an error that ended the guest call.
fn classify_trap(state: &State, e: wasmtime::Error) -> Failure {
    if let Some(f) = &state.breach {
        return f.clone();
    }
    if let Some(desired) = state.guest_memory_breach() {
        return Failure::new(
            FailureCode::GuestMemoryLimit,
            format!(
                "guest linear memory would grow to {desired} bytes, past the limit of {} bytes (limit guest_memory_bytes)",
                state.limits.guest_memory_bytes
            ),
        );
    }
    let text = format!("{e:#}");
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure::new(
            FailureCode::FuelExhausted,
            format!(
                "the guest's own code used all {} units of fuel (limit fuel); host ops cost none, so this is wasm-side work",
                state.limits.fuel
            ),
        ),
        Some(Trap::Interrupt) => Failure::new(
            FailureCode::DeadlineExceeded,
            format!("the run took longer than {} s (limit timeout_s)", state.limits.timeout_s),
        ),
        Some(trap) => Failure::new(FailureCode::GuestTrap, format!("the guest trapped: {trap} ({text})")),
        None if text.contains("store handle limit exceeded") => Failure::new(
            FailureCode::HandleLimit,
            format!(
                "the guest holds more component handles than the store allows (limit max_handles = {}): {text}",
                state.limits.max_handles
            ),
        ),
        None if text.contains("handle") => Failure::new(
            FailureCode::BadHandle,
            format!("the guest used a tensor handle that is not live in this run: {text}"),
        ),
        None => Failure::new(FailureCode::GuestTrap, format!("the guest call failed: {text}")),
    }
}
