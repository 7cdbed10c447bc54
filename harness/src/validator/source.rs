//! Where commitments come from: the chain's Commitments pallet, or a local JSON file in the
//! same format (for tests, and for a runtime without the pallet).
//!
//! The file is a JSON array of `{"hotkey": "<ss58>", "block": N, "data": "<commitment>"}`;
//! `data_hex` instead of `data` gives raw bytes, so a file can hold what a chain can (bytes
//! that are not UTF-8). It is re-read at every poll, so entries can be appended while the
//! daemon runs.

use std::path::Path;

use serde::Deserialize;

use crate::chain::client::RawCommitment;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    hotkey: String,
    #[serde(default)]
    block: u64,
    data: Option<String>,
    data_hex: Option<String>,
}

/// Reads a commitments file. A malformed file is an error (the poll is skipped and retried);
/// a malformed entry's data is carried as an invalid commitment, like a chain's would be.
pub fn read_file(path: &Path) -> Result<Vec<RawCommitment>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the commitments file {}: {e}", path.display()))?;
    let entries: Vec<FileEntry> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the commitments file {} is not a JSON array of {{hotkey, block, data}}: {e}",
            path.display()
        )
    })?;
    Ok(entries
        .into_iter()
        .map(|e| RawCommitment {
            hotkey: e.hotkey,
            block: e.block,
            data: match (e.data, e.data_hex) {
                (Some(text), None) => Ok(text.into_bytes()),
                (None, Some(h)) => hex::decode(h.trim_start_matches("0x"))
                    .map_err(|_| "data_hex is not hex".to_string()),
                _ => Err("an entry needs exactly one of data and data_hex".to_string()),
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_their_faults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"[{"hotkey": "a", "block": 3, "data": "x:y"},
                {"hotkey": "b", "data_hex": "0xff00"},
                {"hotkey": "c", "data": "x", "data_hex": "00"},
                {"hotkey": "d", "data_hex": "zz"}]"#,
        )
        .unwrap();
        let got = read_file(&path).unwrap();
        assert_eq!(got[0].data, Ok(b"x:y".to_vec()));
        assert_eq!((got[0].block, got[1].block), (3, 0));
        assert_eq!(got[1].data, Ok(vec![0xff, 0]));
        assert!(got[2].data.is_err() && got[3].data.is_err());
        std::fs::write(&path, "{").unwrap();
        assert!(read_file(&path).unwrap_err().contains("not a JSON array"));
        assert!(read_file(&dir.path().join("none")).is_err());
    }
}
