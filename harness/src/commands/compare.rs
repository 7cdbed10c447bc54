//! Bitwise comparison of two runs' outputs (uploads and final weights), as written by workers.

use std::path::Path;

use crusades_reference::io;
use crusades_sandbox::worker::{upload_path, WEIGHTS_FILE};
use tch::Device;

/// The first tensor that differs between the outputs in `a` and `b`, or `None` when every
/// upload of `windows` windows and every final weight is bit-identical.
pub fn first_difference(a: &Path, b: &Path, windows: usize) -> anyhow::Result<Option<String>> {
    let mut files: Vec<(String, std::path::PathBuf, std::path::PathBuf)> = (0..windows)
        .map(|w| (format!("window {w}"), upload_path(a, w), upload_path(b, w)))
        .collect();
    files.push(("weights".into(), a.join(WEIGHTS_FILE), b.join(WEIGHTS_FILE)));
    for (what, fa, fb) in files {
        let (ta, tb) = (io::read(&fa, Device::Cpu)?, io::read(&fb, Device::Cpu)?);
        if ta.tensors.len() != tb.tensors.len() {
            return Ok(Some(format!(
                "{what}: {} tensors against {}",
                ta.tensors.len(),
                tb.tensors.len()
            )));
        }
        for ((na, x), (nb, y)) in ta.tensors.iter().zip(&tb.tensors) {
            let equal = na == nb && x.kind() == y.kind() && x.size() == y.size() && x.equal(y);
            if !equal {
                return Ok(Some(format!("{what}: {na}")));
            }
        }
    }
    Ok(None)
}
