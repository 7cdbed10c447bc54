//! Token sources and the page draw (WORKLOAD.md, "Data").
//!
//! A corpus is a sequence of pages; a page is `seqs` sequences of `T+1` tokens. Window `w` of
//! miner `uid` trains on page `splitmix64(seed_w) mod pages`, with
//! `seed_w = ((uid·1000003) XOR w) AND 0xFFFFFFFF` (Templar's seed formula).
//!
//! The synthetic corpus is a sparse Markov chain, fully determined by its seed:
//! - token `a` has `SUCCESSORS` successors, `succ(a, r) = zipf(stream(seed, a·8 + r))`, where
//!   `zipf` maps 64 bits to a token log-uniformly (see [`zipf_token`]), so frequent tokens are
//!   frequent successors, as in real text;
//! - successor `r` is chosen with Zipf weight `1/(r+1)`: with `u` uniform in (0,1), the first
//!   `r` whose cumulative weight exceeds `u·Σw`;
//! - page `p` is one walk drawn from the generator seeded with `stream(seed ^ PAGE_SALT, p)`:
//!   the first draw picks the start token (`mod vocab`), each later draw one step.
//!
//! Its per-token entropy is about 1.9 nats given the previous token, and its unigram law is
//! skewed, so a model learns first the frequencies, then the transitions, and both show in the
//! loss long before ln(vocab).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::{CorpusSpec, WorkloadConfig};
use crate::error::{Error, Result};
use crate::rng::{splitmix64, stream_at, unit, SplitMix64};

pub const SUCCESSORS: usize = 8;
const PAGE_SALT: u64 = 0x7061_6765_7061_6765; // "pagepage"

/// Templar's per-window seed, then SplitMix64 in place of numpy's generator.
pub fn page_index(uid: u64, window: u64, pages: u64) -> u64 {
    assert!(pages > 0, "a corpus has at least one page");
    let seed_w = (uid.wrapping_mul(1_000_003) ^ window) & 0xFFFF_FFFF;
    splitmix64(seed_w) % pages
}

/// A token drawn log-uniformly, `⌊(V+1)^u⌋ − 1` for `u` uniform in (0,1): P(t) ≈ ln(1+1/(t+1)) /
/// ln(V+1), a Zipf-like law like that of real text. Lower ids are the frequent tokens.
fn zipf_token(bits: u64, vocab: u64) -> u32 {
    let t = ((vocab as f64 + 1.0).ln() * unit(bits)).exp().floor() as u64;
    (t.clamp(1, vocab) - 1) as u32
}

/// Element type of a flat token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    pub fn name(self) -> &'static str {
        match self {
            TokenDtype::U16 => "u16",
            TokenDtype::U32 => "u32",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "u16" | "uint16" => Ok(TokenDtype::U16),
            "u32" | "uint32" => Ok(TokenDtype::U32),
            _ => Err(Error::Config(format!(
                "token dtype '{s}' is not supported; use u16 or u32"
            ))),
        }
    }

    fn width(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

enum Source {
    Synthetic {
        seed: u64,
        pages: u64,
        successors: Vec<u32>,
        cumulative: [f64; SUCCESSORS],
    },
    Tokens {
        tokens: Vec<u32>,
        sha256: String,
        dtype: TokenDtype,
    },
}

/// One window's batch: `seqs × (T+1)` tokens, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub index: u64,
    pub seqs: i64,
    pub seq_len: i64,
    pub tokens: Vec<i64>,
}

impl Page {
    /// Inputs `[seqs, T]` and labels `[seqs, T]` (the inputs shifted by one), on `device`.
    pub fn inputs_and_labels(&self, device: tch::Device) -> Result<(tch::Tensor, tch::Tensor)> {
        let all = tch::Tensor::f_from_slice(&self.tokens)?
            .f_view([self.seqs, self.seq_len + 1])?
            .f_to_device(device)?;
        let inputs = all.f_narrow(1, 0, self.seq_len)?.f_contiguous()?;
        let labels = all.f_narrow(1, 1, self.seq_len)?.f_contiguous()?;
        Ok((inputs, labels))
    }
}

pub struct Corpus {
    source: Source,
    vocab: i64,
    seqs: i64,
    seq_len: i64,
}

impl Corpus {
    /// The corpus a configuration names. A token-file configuration needs its file: use
    /// [`Corpus::from_token_file`] for that.
    pub fn synthetic(config: &WorkloadConfig) -> Result<Self> {
        let CorpusSpec::Synthetic { seed, pages } = config.corpus else {
            return Err(Error::Config(
                "this workload reads a token file; open it with Corpus::from_token_file".into(),
            ));
        };
        let vocab = config.model.vocab;
        let successors = (0..vocab as u64 * SUCCESSORS as u64)
            .map(|i| zipf_token(stream_at(seed, i), vocab as u64))
            .collect();
        let mut cumulative = [0.0; SUCCESSORS];
        let mut total = 0.0;
        for (r, c) in cumulative.iter_mut().enumerate() {
            total += 1.0 / (r as f64 + 1.0);
            *c = total;
        }
        Ok(Self {
            source: Source::Synthetic {
                seed,
                pages,
                successors,
                cumulative,
            },
            vocab,
            seqs: config.seqs_per_window,
            seq_len: config.model.seq_len,
        })
    }

    /// Reads a flat little-endian token file: a raw `.bin` (nanoGPT; `dtype` defaults to u16)
    /// or a `.npy` array of u16/u32 (Templar's shards; the header gives the dtype). Updates
    /// `config.corpus` to name the file by content.
    pub fn from_token_file(
        path: &Path,
        dtype: Option<TokenDtype>,
        config: &mut WorkloadConfig,
    ) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let is_npy = bytes.starts_with(b"\x93NUMPY");
        let (payload, dtype) = if is_npy {
            let (offset, npy_dtype) = parse_npy_header(&bytes).map_err(|m| Error::file(path, m))?;
            if let Some(d) = dtype {
                if d != npy_dtype {
                    return Err(Error::file(
                        path,
                        format!(
                            "the .npy header says {} but {} was asked for",
                            npy_dtype.name(),
                            d.name()
                        ),
                    ));
                }
            }
            (&bytes[offset..], npy_dtype)
        } else {
            (&bytes[..], dtype.unwrap_or(TokenDtype::U16))
        };
        let width = dtype.width();
        if payload.len() % width != 0 {
            return Err(Error::file(
                path,
                format!(
                    "{} bytes of tokens is not a whole number of {} values; is the dtype right?",
                    payload.len(),
                    dtype.name()
                ),
            ));
        }
        let tokens: Vec<u32> = match dtype {
            TokenDtype::U16 => payload
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .collect(),
            TokenDtype::U32 => payload
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        let vocab = config.model.vocab;
        if let Some((pos, &t)) = tokens.iter().enumerate().find(|(_, &t)| t as i64 >= vocab) {
            return Err(Error::file(
                path,
                format!(
                    "token {t} at position {pos} is outside the vocabulary of {vocab}; \
                     set vocab to at least {} or use the matching tokenizer's file",
                    t as i64 + 1
                ),
            ));
        }
        let page_len = config.seqs_per_window * (config.model.seq_len + 1);
        if (tokens.len() as i64) < page_len {
            return Err(Error::file(
                path,
                format!(
                    "it holds {} tokens but one page needs {page_len} ({} sequences of {}+1)",
                    tokens.len(),
                    config.seqs_per_window,
                    config.model.seq_len
                ),
            ));
        }
        config.corpus = CorpusSpec::File {
            sha256: sha256.clone(),
            dtype: dtype.name().to_string(),
            tokens: tokens.len() as u64,
        };
        Ok(Self {
            source: Source::Tokens {
                tokens,
                sha256,
                dtype,
            },
            vocab,
            seqs: config.seqs_per_window,
            seq_len: config.model.seq_len,
        })
    }

    pub fn page_len(&self) -> usize {
        (self.seqs * (self.seq_len + 1)) as usize
    }

    pub fn pages(&self) -> u64 {
        match &self.source {
            Source::Synthetic { pages, .. } => *pages,
            Source::Tokens { tokens, .. } => tokens.len() as u64 / self.page_len() as u64,
        }
    }

    pub fn spec(&self) -> CorpusSpec {
        match &self.source {
            Source::Synthetic { seed, pages, .. } => CorpusSpec::Synthetic {
                seed: *seed,
                pages: *pages,
            },
            Source::Tokens {
                tokens,
                sha256,
                dtype,
            } => CorpusSpec::File {
                sha256: sha256.clone(),
                dtype: dtype.name().into(),
                tokens: tokens.len() as u64,
            },
        }
    }

    pub fn page(&self, index: u64) -> Result<Page> {
        let pages = self.pages();
        if index >= pages {
            return Err(Error::Corpus(format!(
                "page {index} does not exist; the corpus has {pages}"
            )));
        }
        let len = self.page_len();
        let tokens = match &self.source {
            Source::Synthetic {
                seed,
                successors,
                cumulative,
                ..
            } => {
                let mut g = SplitMix64::new(stream_at(seed ^ PAGE_SALT, index));
                let total = cumulative[SUCCESSORS - 1];
                let mut prev = (g.next_u64() % self.vocab as u64) as usize;
                let mut out = Vec::with_capacity(len);
                out.push(prev as i64);
                for _ in 1..len {
                    let u = g.next_unit() * total;
                    let r = cumulative
                        .iter()
                        .position(|&c| u < c)
                        .unwrap_or(SUCCESSORS - 1);
                    prev = successors[prev * SUCCESSORS + r] as usize;
                    out.push(prev as i64);
                }
                out
            }
            Source::Tokens { tokens, .. } => {
                let start = index as usize * len;
                tokens[start..start + len]
                    .iter()
                    .map(|&t| t as i64)
                    .collect()
            }
        };
        Ok(Page {
            index,
            seqs: self.seqs,
            seq_len: self.seq_len,
            tokens,
        })
    }

    /// The page miner `uid` trains on in window `window`.
    pub fn window_page(&self, uid: u64, window: u64) -> Result<Page> {
        self.page(page_index(uid, window, self.pages()))
    }
}

/// Returns (offset of the data, dtype) of a 1-D little-endian u16/u32 `.npy` array.
fn parse_npy_header(bytes: &[u8]) -> std::result::Result<(usize, TokenDtype), String> {
    if bytes.len() < 10 {
        return Err("truncated .npy header".into());
    }
    let major = bytes[6];
    let (header_len, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!(".npy format version {major} is not supported")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| ".npy header is not text")?;
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .ok_or(".npy header has no descr")?;
    let dtype = match descr {
        "<u2" | "|u2" => TokenDtype::U16,
        "<u4" | "|u4" => TokenDtype::U32,
        other => {
            return Err(format!(
                ".npy dtype '{other}' is not a little-endian u16 or u32 token array"
            ))
        }
    };
    if header.contains("'fortran_order': True") {
        return Err(".npy arrays in Fortran order are not supported".into());
    }
    Ok((end, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_draw_matches_the_golden_values() {
        // Computed independently (Python, from the formula in WORKLOAD.md).
        let golden: [(u64, u64, u64, u64); 6] = [
            (0, 0, 1 << 20, 904623),
            (0, 1, 1 << 20, 154817),
            (1, 0, 1 << 20, 138532),
            (7, 3, 1000, 708),
            (123456, 42, 1 << 20, 156573),
            (u64::MAX, 5, 999_983, 259504),
        ];
        for (uid, w, pages, want) in golden {
            assert_eq!(page_index(uid, w, pages), want, "uid {uid} window {w}");
        }
    }

    #[test]
    fn synthetic_pages_are_deterministic_and_in_vocab() {
        let mut c = WorkloadConfig::from_preset("tiny").unwrap();
        c.seqs_per_window = 2;
        let a = Corpus::synthetic(&c).unwrap();
        let b = Corpus::synthetic(&c).unwrap();
        let p = a.page(17).unwrap();
        assert_eq!(p, b.page(17).unwrap());
        assert_ne!(p.tokens, a.page(18).unwrap().tokens);
        assert_eq!(p.tokens.len(), 2 * 129);
        assert!(p.tokens.iter().all(|&t| (0..1024).contains(&t)));
        assert!(a.page(1 << 20).is_err());
    }

    #[test]
    fn token_files_read_raw_and_npy() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = WorkloadConfig::from_preset("tiny").unwrap();
        c.seqs_per_window = 1;
        c.model.seq_len = 3;
        let toks: Vec<u16> = (0..10).collect();
        let raw: Vec<u8> = toks.iter().flat_map(|t| t.to_le_bytes()).collect();
        let bin = dir.path().join("t.bin");
        std::fs::write(&bin, &raw).unwrap();
        let corpus = Corpus::from_token_file(&bin, None, &mut c).unwrap();
        assert_eq!(corpus.pages(), 2);
        assert_eq!(corpus.page(1).unwrap().tokens, vec![4, 5, 6, 7]);
        assert!(matches!(c.corpus, CorpusSpec::File { tokens: 10, .. }));

        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '<u2', 'fortran_order': False, 'shape': (10,), }";
        let mut h = header.to_string();
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        npy.extend_from_slice(&(h.len() as u16).to_le_bytes());
        npy.extend_from_slice(h.as_bytes());
        npy.extend_from_slice(&raw);
        let path = dir.path().join("t.npy");
        std::fs::write(&path, &npy).unwrap();
        let corpus = Corpus::from_token_file(&path, None, &mut c).unwrap();
        assert_eq!(corpus.page(0).unwrap().tokens, vec![0, 1, 2, 3]);

        std::fs::write(&bin, &raw[..5]).unwrap();
        let e = Corpus::from_token_file(&bin, None, &mut c).err().unwrap();
        assert!(e.to_string().contains("whole number"), "{e}");
        c.model.vocab = 5;
        std::fs::write(&bin, &raw).unwrap();
        let e = Corpus::from_token_file(&bin, None, &mut c).err().unwrap();
        assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    }
}
