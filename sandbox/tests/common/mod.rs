//! Builds the test guests (tests/guests) and the baseline (submissions/baseline) for
//! wasm32-unknown-unknown and encodes them as components, once per test binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crusades_sandbox::runner::encode_component;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo_build(workspace: &Path) {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the guests in {} failed",
        workspace.display()
    );
}

fn component(workspace: &Path, crate_name: &str) -> Vec<u8> {
    let module = workspace
        .join("target/wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    let bytes = std::fs::read(&module).unwrap_or_else(|e| panic!("{}: {e}", module.display()));
    encode_component(&bytes).unwrap_or_else(|e| panic!("encoding {crate_name}: {e}"))
}

/// The component of test guest `name` (tests/guests/NAME).
pub fn guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<()> = OnceLock::new();
    let ws = root().join("sandbox/tests/guests");
    BUILT.get_or_init(|| cargo_build(&ws));
    component(&ws, &format!("guest-{name}"))
}

/// The baseline submission's component.
pub fn baseline() -> Vec<u8> {
    static BUILT: OnceLock<()> = OnceLock::new();
    let ws = root().join("submissions");
    BUILT.get_or_init(|| cargo_build(&ws));
    component(&ws, "crusades-baseline")
}
