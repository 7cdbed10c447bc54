//! Builds cases of the adversarial corpus (submissions/exploits) and the baseline itself
//! (submissions/baseline) for wasm32-unknown-unknown, once per test binary, and encodes each as
//! a component written to a file: the harness CLI takes a component's path.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use crusades_sandbox::runner::encode_component;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the `crusades` binary with `args`, its cache in `cache`.
pub fn crusades(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crusades"))
        .args(args)
        .env("CRUSADES_CACHE", cache)
        .output()
        .expect("the binary runs")
}

/// Builds a guest workspace as `crusades build` does (the same flags, so the two share cargo's
/// cache rather than rebuilding each other's guests).
fn cargo_build(workspace: &Path) {
    let mut build = crusades::commands::build::WasmBuild::new(&workspace.join("Cargo.toml"))
        .expect("the guest build is set up");
    let status = build.command.arg("--quiet").status().expect("cargo runs");
    assert!(
        status.success(),
        "building the guests in {} failed",
        workspace.display()
    );
}

/// Encodes the module of `crate_name` (built in `workspace`) and writes the component next to
/// it, as `crusades build` does (`<crate>.component.wasm`), once per process. The write goes
/// through a rename, so a concurrent test binary never reads half a file.
fn component(workspace: &Path, crate_name: &str) -> PathBuf {
    static WRITTEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let module = workspace
        .join("target/wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    let path = module.with_extension("component.wasm");
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    if written.contains(&path) {
        return path;
    }
    let bytes = std::fs::read(&module).unwrap_or_else(|e| panic!("{}: {e}", module.display()));
    let encoded = encode_component(&bytes).unwrap_or_else(|e| panic!("encoding {crate_name}: {e}"));
    let partial = module.with_extension(format!("component.wasm.{}", std::process::id()));
    std::fs::write(&partial, encoded).unwrap_or_else(|e| panic!("{}: {e}", partial.display()));
    std::fs::rename(&partial, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    written.push(path.clone());
    path
}

/// The component of corpus case `name` (submissions/exploits/NAME, crate `exploit-NAME`), e.g.
/// `skip-window`, `no-error-feedback`, `wrong-topk`, `zero-upload`, `nan-weights` or
/// `half-tokens`.
pub fn corrupted(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let ws = root().join("submissions/exploits");
    BUILT.get_or_init(|| cargo_build(&ws));
    component(&ws, &format!("exploit-{name}"))
}

/// The baseline submission's component.
pub fn baseline_component() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let ws = root().join("submissions");
    BUILT.get_or_init(|| cargo_build(&ws));
    component(&ws, "crusades-baseline")
}

/// The optimized example submission's component (submissions/fast).
pub fn fast_component() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let ws = root().join("submissions");
    BUILT.get_or_init(|| cargo_build(&ws));
    component(&ws, "crusades-fast")
}
pub mod chopsticks;
