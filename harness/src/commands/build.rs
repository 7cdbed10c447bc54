//! `crusades build DIR`: a submission crate → a WebAssembly component.
//!
//! The crate is compiled for `wasm32-unknown-unknown` (the target is installed when missing),
//! which needs no WASI even with std, and its core module is encoded as a component with
//! wit-component, from the `component-type` section that wit-bindgen embeds.
//!
//! The build is reproducible: the same sources and toolchain give the same sha256 wherever the
//! checkout lies. Panic locations embed source paths, so every ancestor of the workspace root
//! and CARGO_HOME are remapped (`--remap-path-prefix`) to fixed names (`/workspace`,
//! `/workspace/..`, …, `/cargo`), and cargo runs in the crate's directory, so the cargo
//! configuration that applies is the submission's, not that of wherever crusades was started.
//! One thing no flag fixes: cargo hashes the absolute path of a path dependency that lies
//! outside the workspace root into its `-C metadata`, which changes symbol names and code
//! layout; the build warns when it sees one.

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
    /// Why this component's sha256 may depend on where it was built (empty when it does not).
    pub warnings: Vec<String>,
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
    let wasm = WasmBuild::new(&manifest)?;
    let mut cmd = wasm.command;
    cmd.arg("--message-format=json-render-diagnostics");
    let (workspace, remaps) = (wasm.workspace, wasm.remaps);
    let output = cmd
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
    let mut warnings = outside_path_dependencies(&output.stdout, &workspace);
    warnings.extend(embedded_paths(&module, &remaps));
    if chatty {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    }
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
        warnings,
    })
}

/// `cargo build --release --target wasm32-unknown-unknown --manifest-path MANIFEST` as
/// `crusades build` runs it: in the manifest's directory, with the path remaps in the
/// rustflags. Whoever else builds the same guests into the same target directory (the tests)
/// can run this command, so that cargo's fingerprints agree and neither rebuilds the other's.
pub struct WasmBuild {
    pub command: Command,
    /// The workspace root, as cargo sees it.
    pub workspace: PathBuf,
    pub remaps: Vec<(PathBuf, String)>,
}

impl WasmBuild {
    pub fn new(manifest: &Path) -> anyhow::Result<Self> {
        let crate_dir = manifest.parent().unwrap_or(Path::new("/")).to_path_buf();
        let workspace = workspace_root(manifest).unwrap_or_else(|| crate_dir.clone());
        let remaps = remaps(&workspace, cargo_home().as_deref());
        let mut command = Command::new(cargo());
        command
            .current_dir(&crate_dir)
            .args(["build", "--release", "--target", TARGET, "--manifest-path"])
            .arg(manifest);
        add_rustflags(&mut command, &crate_dir, &remap_flags(&remaps))?;
        Ok(Self {
            command,
            workspace,
            remaps,
        })
    }
}

/// The workspace root of the package at `manifest`, as cargo sees it.
fn workspace_root(manifest: &Path) -> Option<PathBuf> {
    let out = Command::new(cargo())
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .arg("--manifest-path")
        .arg(manifest)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Path::new(text.trim()).parent().map(Path::to_path_buf)
}

/// $CARGO_HOME, else ~/.cargo: where registry and git dependencies are unpacked.
fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// (prefix, replacement) pairs, least specific first: rustc applies the last remap that
/// matches, so a path under the workspace root becomes `/workspace/…` rather than
/// `/workspace/../…/submissions/…`. Every ancestor of the root is remapped (not only its parent)
/// so that a path dependency anywhere in the checkout is named relative to the workspace. Each
/// prefix appears as given and canonicalised, since cargo hands rustc paths in either form.
pub fn remaps(workspace: &Path, cargo_home: Option<&Path>) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    let mut push = |p: &Path, to: String| {
        for form in [Some(p.to_path_buf()), p.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            if form.parent().is_some() && !out.iter().any(|(q, _)| *q == form) {
                out.push((form, to.clone()));
            }
        }
    };
    for (up, dir) in workspace.ancestors().enumerate() {
        push(dir, format!("/workspace{}", "/..".repeat(up)));
    }
    if let Some(home) = cargo_home {
        push(home, "/cargo".into());
    }
    out.sort_by_key(|(p, _)| p.components().count());
    out
}

fn remap_flags(remaps: &[(PathBuf, String)]) -> Vec<String> {
    remaps
        .iter()
        .filter_map(|(from, to)| Some(format!("--remap-path-prefix={}={to}", from.to_str()?)))
        .collect()
}

/// Adds `flags` to the rustflags cargo gives rustc, keeping the user's. Cargo takes rustflags
/// from one source only (CARGO_ENCODED_RUSTFLAGS, else RUSTFLAGS, else the config's
/// `target.<triple>`/`target.<cfg>` entries joined, else `build.rustflags`), so they go where
/// the user's already are: appended to the environment's, or as a `--config` array under the
/// key in force, which cargo joins to the config files' arrays.
fn add_rustflags(cmd: &mut Command, crate_dir: &Path, flags: &[String]) -> anyhow::Result<()> {
    if let Some(encoded) = std::env::var_os("CARGO_ENCODED_RUSTFLAGS") {
        let mut all: Vec<String> = encoded
            .to_string_lossy()
            .split('\x1f')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        all.extend(flags.iter().cloned());
        cmd.env("CARGO_ENCODED_RUSTFLAGS", all.join("\x1f"));
        return Ok(());
    }
    if let Some(plain) = std::env::var_os("RUSTFLAGS") {
        let mut all: Vec<String> = plain
            .to_string_lossy()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        all.extend(flags.iter().cloned());
        cmd.env("CARGO_ENCODED_RUSTFLAGS", all.join("\x1f"))
            .env_remove("RUSTFLAGS");
        return Ok(());
    }
    let configured = configured_rustflags(crate_dir);
    let target_level = configured.iter().any(|c| c.target_level);
    let key = if target_level {
        format!("target.{TARGET}.rustflags")
    } else {
        "build.rustflags".to_string()
    };
    // Cargo cannot join an array to a string ("failed to merge key"), and a string of flags
    // cannot carry a path with a space in it: ask for the array form.
    if let Some(c) = configured
        .iter()
        .find(|c| c.target_level == target_level && c.is_string)
    {
        bail_input!(
            "{} sets rustflags as a string; write it as an array (rustflags = [\"-C\", \"…\"]) so \
             that crusades build can add its path remaps, or set RUSTFLAGS instead",
            c.source
        );
    }
    let array: Vec<String> = flags
        .iter()
        .map(|f| toml::Value::String(f.clone()).to_string())
        .collect();
    cmd.arg("--config")
        .arg(format!("{key}=[{}]", array.join(",")));
    Ok(())
}

/// Rustflags that cargo configuration sets for a wasm build started in `crate_dir`.
struct Configured {
    source: String,
    /// `target.wasm32-unknown-unknown` or `target.'cfg(…)'`, rather than `build`. A cfg entry
    /// is counted whether or not it matches wasm32: that would take evaluating it.
    target_level: bool,
    is_string: bool,
}

fn configured_rustflags(crate_dir: &Path) -> Vec<Configured> {
    let mut found = Vec::new();
    for (var, target_level) in [
        ("CARGO_BUILD_RUSTFLAGS", false),
        ("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", true),
    ] {
        if std::env::var_os(var).is_some() {
            // Cargo reads a list from the environment as a whitespace-separated string, and
            // joins it to --config's array.
            found.push(Configured {
                source: var.into(),
                target_level,
                is_string: false,
            });
        }
    }
    let mut files: Vec<PathBuf> = crate_dir
        .ancestors()
        .flat_map(|d| [d.join(".cargo/config.toml"), d.join(".cargo/config")])
        .collect();
    if let Some(home) = cargo_home() {
        files.extend([home.join("config.toml"), home.join("config")]);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(value) = text.parse::<toml::Table>() else {
            continue;
        };
        let source = file.display().to_string();
        if let Some(flags) = value.get("build").and_then(|b| b.get("rustflags")) {
            found.push(Configured {
                source: source.clone(),
                target_level: false,
                is_string: flags.is_str(),
            });
        }
        if let Some(targets) = value.get("target").and_then(|t| t.as_table()) {
            for (name, entry) in targets {
                if name != TARGET && !name.starts_with("cfg(") {
                    continue;
                }
                if let Some(flags) = entry.get("rustflags") {
                    found.push(Configured {
                        source: source.clone(),
                        target_level: true,
                        is_string: flags.is_str(),
                    });
                }
            }
        }
    }
    found
}

/// Path dependencies outside the workspace root, from cargo's `compiler-artifact` messages.
fn outside_path_dependencies(messages: &[u8], workspace: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for line in messages.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(dir) = msg["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).parent())
        else {
            continue;
        };
        let path_source = msg["package_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("path+"));
        if path_source && !dir.starts_with(workspace) {
            let w = format!(
                "{} is a path dependency outside the workspace root {}: cargo hashes its \
                 absolute path into symbol names, so the component's sha256 depends on where \
                 the checkout lies (make it a workspace member to build reproducibly)",
                dir.display(),
                workspace.display()
            );
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

/// The remapped prefixes that still occur in the module's bytes as the start of a path, the
/// deepest of each nest only. Short prefixes (`/tmp`, `/home`) are left out: their text can occur
/// for other reasons.
fn embedded_paths(module: &[u8], remaps: &[(PathBuf, String)]) -> Vec<String> {
    let mut found: Vec<&Path> = Vec::new();
    for (p, _) in remaps.iter().rev() {
        if p.components().count() <= 2 || found.iter().any(|f| f.starts_with(p)) {
            continue;
        }
        let Some(text) = p.to_str() else { continue };
        let needle = format!("{text}/");
        if module.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(p);
        }
    }
    found
        .iter()
        .map(|p| {
            format!(
                "the module embeds the absolute path {}, so its sha256 depends on where it \
                 was built",
                p.display()
            )
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ancestor_of_the_workspace_is_remapped_the_deepest_last() {
        let r = remaps(
            Path::new("/no/such/checkout/submissions"),
            Some(Path::new("/no/such/home/.cargo")),
        );
        let pairs: Vec<(&str, &str)> = r
            .iter()
            .map(|(p, to)| (p.to_str().unwrap(), to.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("/no", "/workspace/../../.."),
                ("/no/such", "/workspace/../.."),
                ("/no/such/checkout", "/workspace/.."),
                ("/no/such/checkout/submissions", "/workspace"),
                ("/no/such/home/.cargo", "/cargo"),
            ]
        );
        let flags = remap_flags(&r);
        assert_eq!(
            flags.last().unwrap(),
            "--remap-path-prefix=/no/such/home/.cargo=/cargo"
        );
    }

    #[test]
    fn a_path_dependency_outside_the_workspace_is_warned_about() {
        let messages = br#"{"reason":"compiler-artifact","package_id":"path+file:///w/subs/sdk#crusades-sdk@0.1.0","manifest_path":"/w/subs/sdk/Cargo.toml","filenames":[]}
{"reason":"compiler-artifact","package_id":"path+file:///w/subs/exploits/case#case@0.1.0","manifest_path":"/w/subs/exploits/case/Cargo.toml","filenames":[]}
{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#wit-bindgen@0.63.0","manifest_path":"/home/u/.cargo/registry/src/x/wit-bindgen-0.63.0/Cargo.toml","filenames":[]}
not json
"#;
        let w = outside_path_dependencies(messages, Path::new("/w/subs/exploits"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("/w/subs/sdk is a path dependency outside"));
        assert!(outside_path_dependencies(messages, Path::new("/w/subs")).is_empty());
    }

    #[test]
    fn an_absolute_path_left_in_the_module_is_found() {
        let r = remaps(Path::new("/no/such/checkout/submissions"), None);
        let module = b"\0\0panicked at /no/such/checkout/sdk/src/lib.rs:3:5\0";
        let found = embedded_paths(module, &r);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("path /no/such/checkout,"), "{found:?}");
        assert!(embedded_paths(b"/workspace/../sdk/src/lib.rs", &r).is_empty());
    }
}
