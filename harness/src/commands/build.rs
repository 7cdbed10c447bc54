//! `crusades build DIR`: a submission crate → a WebAssembly component.
//!
//! The crate is compiled for `wasm32-unknown-unknown` (the target is installed when missing),
//! which needs no WASI even with std, and its core module is encoded as a component with
//! wit-component, from the `component-type` section that wit-bindgen embeds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crusades_sandbox::runner::{encode_component, sha256_hex};

use crate::bail_input;

pub const TARGET: &str = "wasm32-unknown-unknown";

#[derive(Args)]
pub struct BuildArgs {
    /// The submission crate (a directory with a Cargo.toml whose lib is a cdylib).
    pub dir: PathBuf,
    /// Where to write the component (default: next to the core module, NAME.component.wasm).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct Built {
    pub component: PathBuf,
    pub sha256: String,
    pub bytes: usize,
    pub core_module: PathBuf,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let built = build(&args.dir, args.out.as_deref(), !args.json)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&built)?);
    } else {
        println!("{}", built.component.display());
        println!("sha256 {}  ({} bytes)", built.sha256, built.bytes);
    }
    Ok(())
}

/// Accepts a component file or a crate directory; builds the latter.
pub fn resolve_submission(path: &Path, chatty: bool) -> anyhow::Result<PathBuf> {
    if path.is_dir() {
        Ok(build(path, None, chatty)?.component)
    } else if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        bail_input!(
            "{}: no such file or directory; give a submission crate directory or a .wasm component",
            path.display()
        )
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ensure_target(chatty: bool) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            if chatty {
                eprintln!("installing the {TARGET} target (rustup target add {TARGET})");
            }
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .stdout(Stdio::null())
                .status()
                .context("running rustup")?;
            if !status.success() {
                anyhow::bail!("`rustup target add {TARGET}` failed; run it by hand to see why");
            }
            Ok(())
        }
        // No rustup: a toolchain installed otherwise may still have the target.
        Err(_) => Ok(()),
    }
}

/// Builds the crate at `dir` and encodes its module as a component.
pub fn build(dir: &Path, out: Option<&Path>, chatty: bool) -> anyhow::Result<Built> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail_input!(
            "{}: no Cargo.toml; `crusades build` takes a submission crate directory (see submissions/baseline)",
            dir.display()
        );
    }
    let manifest = manifest.canonicalize()?;
    ensure_target(chatty)?;
    if chatty {
        eprintln!("building {} for {TARGET}", dir.display());
    }
    let output = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(if chatty {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail_input!(
            "cargo could not build {} for {TARGET}{}",
            dir.display(),
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!(":\n{}", stderr.trim_end())
            }
        );
    }
    let core = core_module(&output.stdout, &manifest).with_context(|| {
        format!(
            "{}: no .wasm came out; is its [lib] crate-type [\"cdylib\"]?",
            dir.display()
        )
    })?;
    let module = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let component = encode_component(&module).map_err(|e| {
        anyhow::Error::new(crate::InputError(format!(
            "{}: cannot encode it as a component: {e}. Does the crate use wit-bindgen with sandbox/wit (the crusades SDK)?",
            core.display()
        )))
    })?;
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => core.with_extension("component.wasm"),
    };
    std::fs::write(&path, &component).with_context(|| format!("writing {}", path.display()))?;
    Ok(Built {
        component: path,
        sha256: sha256_hex(&component),
        bytes: component.len(),
        core_module: core,
    })
}

/// The cdylib `.wasm` of the package at `manifest`, from cargo's JSON messages.
fn core_module(messages: &[u8], manifest: &Path) -> Option<PathBuf> {
    let mut found = None;
    for line in messages.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let same = msg["manifest_path"]
            .as_str()
            .and_then(|p| Path::new(p).canonicalize().ok())
            .is_some_and(|p| p == manifest);
        if !same {
            continue;
        }
        if let Some(files) = msg["filenames"].as_array() {
            found = files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
                .or(found);
        }
    }
    found
}
