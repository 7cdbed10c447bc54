//! Crusades commitments: what a miner publishes on chain to enter a submission.
//!
//! Two forms, at most 128 bytes (the Commitments pallet's limit for this field):
//! - `<sha256 first 32 hex>:<url>`;
//! - `<sha256 first 32 hex>:<block>:<index>:<url>`, where block and index point at a payment
//!   extrinsic.
//!
//! A commitment is text anyone can write, so the parser is strict and total: every input gives
//! either a [`Commitment`] or an [`Invalid`] reason that the validator stores next to it, and
//! nothing panics. The hash is lowercase hex only, numbers are plain decimal (no sign, no
//! leading zeros), and the URL is http(s) with a host and without credentials, whitespace or
//! control characters. Whether the host is a private address is the fetcher's question (it is
//! asked again after every redirect); the parser only checks the form.

use serde::Serialize;

/// The most bytes a commitment may have.
pub const MAX_BYTES: usize = 128;
/// Hex digits of the sha256 prefix.
pub const HASH_HEX: usize = 32;

/// A well-formed commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commitment {
    /// The first 32 hex digits (128 bits) of the submission's sha256, lowercase.
    pub sha256_prefix: String,
    pub url: String,
    /// Where the miner paid, when the commitment names it.
    pub payment: Option<Payment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub block: u64,
    pub index: u32,
}

/// Why a commitment is not one, in words a miner can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Invalid {
    #[error("empty")]
    Empty,
    #[error("{0} bytes; a commitment has at most {MAX_BYTES}")]
    TooLong(usize),
    #[error("not printable ASCII (byte {at}: 0x{byte:02x}); commitments are plain ASCII")]
    NotAscii { at: usize, byte: u8 },
    #[error("no ':' after the hash; the form is <sha256 first 32 hex>:<url>")]
    NoSeparator,
    #[error("the hash {0:?} is not 32 lowercase hex digits (the first half of the sha256)")]
    BadHash(String),
    #[error("the payment block {0:?} is not a decimal number")]
    BadBlock(String),
    #[error("the payment index {0:?} is not a decimal number below 2^32")]
    BadIndex(String),
    #[error("the URL {url:?} is not usable: {why}")]
    BadUrl { url: String, why: String },
}

impl Commitment {
    /// Whether `sha256` (64 hex digits) is the submission this commitment names.
    pub fn matches(&self, sha256: &str) -> bool {
        sha256.len() == 64 && sha256[..HASH_HEX].eq_ignore_ascii_case(&self.sha256_prefix)
    }
}

impl std::fmt::Display for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.payment {
            Some(p) => write!(
                f,
                "{}:{}:{}:{}",
                self.sha256_prefix, p.block, p.index, self.url
            ),
            None => write!(f, "{}:{}", self.sha256_prefix, self.url),
        }
    }
}

/// Parses the raw bytes of a commitment as read from chain storage.
pub fn parse_bytes(raw: &[u8]) -> Result<Commitment, Invalid> {
    if raw.len() > MAX_BYTES {
        return Err(Invalid::TooLong(raw.len()));
    }
    if let Some((at, &byte)) = raw
        .iter()
        .enumerate()
        .find(|(_, b)| !(0x21..=0x7e).contains(*b))
    {
        return Err(Invalid::NotAscii { at, byte });
    }
    // Printable ASCII is UTF-8.
    parse(std::str::from_utf8(raw).map_err(|_| Invalid::NotAscii { at: 0, byte: 0 })?)
}

/// Parses a commitment.
pub fn parse(text: &str) -> Result<Commitment, Invalid> {
    if text.is_empty() {
        return Err(Invalid::Empty);
    }
    if text.len() > MAX_BYTES {
        return Err(Invalid::TooLong(text.len()));
    }
    if let Some((at, byte)) = text
        .bytes()
        .enumerate()
        .find(|(_, b)| !(0x21..=0x7e).contains(b))
    {
        return Err(Invalid::NotAscii { at, byte });
    }
    let (hash, rest) = text.split_once(':').ok_or(Invalid::NoSeparator)?;
    let lower_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if hash.len() != HASH_HEX || !hash.bytes().all(lower_hex) {
        return Err(Invalid::BadHash(hash.to_string()));
    }
    // `<block>:<index>:<url>` when the first field is a number; a URL starts with its scheme,
    // never with a digit.
    let (payment, url) = match rest.split_once(':') {
        Some((block, after)) if block.bytes().next().is_some_and(|c| c.is_ascii_digit()) => {
            let block_value = decimal(block).ok_or_else(|| Invalid::BadBlock(block.into()))?;
            let (index, url) = after
                .split_once(':')
                .ok_or_else(|| Invalid::BadIndex(after.into()))?;
            let index_value = decimal(index)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| Invalid::BadIndex(index.into()))?;
            (
                Some(Payment {
                    block: block_value,
                    index: index_value,
                }),
                url,
            )
        }
        _ => (None, rest),
    };
    check_url(url)?;
    Ok(Commitment {
        sha256_prefix: hash.to_string(),
        url: url.to_string(),
        payment,
    })
}

/// Plain decimal: digits only, no leading zero unless it is "0", within u64.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn check_url(url: &str) -> Result<(), Invalid> {
    let bad = |why: &str| Invalid::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("only http and https are fetched"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials in a URL are refused"));
    }
    if parsed.fragment().is_some() {
        return Err(bad("a fragment has no meaning to the fetcher"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn both_forms_parse() {
        let c = parse(&format!("{H}:https://example.org/sub.wasm")).unwrap();
        assert_eq!(c.sha256_prefix, H);
        assert_eq!(c.url, "https://example.org/sub.wasm");
        assert_eq!(c.payment, None);
        let c = parse(&format!("{H}:4242:7:http://10.1.2.3:8080/x")).unwrap();
        assert_eq!(
            c.payment,
            Some(Payment {
                block: 4242,
                index: 7
            })
        );
        assert_eq!(c.url, "http://10.1.2.3:8080/x");
        assert!(c.matches(&format!("{H}{H}")));
        assert!(!c.matches(H));
    }

    #[test]
    fn hostile_and_malformed_commitments_say_why() {
        let long = format!("{H}:https://example.org/{}", "a".repeat(100));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            (long, "at most 128"),
            (format!("{H}:https://exa mple.org/"), "printable ASCII"),
            (format!("{H}:https://example.org/\n"), "printable ASCII"),
            (format!("{H}:https://example.org/é"), "printable ASCII"),
            ("no-separator-at-all".into(), "no ':'"),
            (
                format!("{}:https://example.org/", H.to_uppercase()),
                "lowercase hex",
            ),
            (
                format!("{}:https://example.org/", &H[..31]),
                "lowercase hex",
            ),
            (format!("{H}0:https://example.org/"), "lowercase hex"),
            (format!("{H}:file:///etc/passwd"), "only http and https"),
            (format!("{H}:javascript:alert(1)"), "only http and https"),
            (format!("{H}:ftp://example.org/x"), "only http and https"),
            (format!("{H}:https://user:pw@example.org/"), "credentials"),
            (format!("{H}:https://example.org/#frag"), "fragment"),
            (format!("{H}:"), "not usable"),
            (format!("{H}:12:https://example.org/"), "payment index"),
            (format!("{H}:012:3:https://example.org/"), "payment block"),
            (
                format!("{H}:99999999999999999999:3:https://example.org/"),
                "payment block",
            ),
            (
                format!("{H}:12:4294967296:https://example.org/"),
                "payment index",
            ),
            (format!("{H}:12:x:https://example.org/"), "payment index"),
            (format!("{H}:1e3:3:https://example.org/"), "payment block"),
        ];
        for (text, why) in cases {
            let e = parse(&text).unwrap_err();
            assert!(
                e.to_string().contains(why),
                "{text:?}: {e} (wanted {why:?})"
            );
        }
        assert!(matches!(
            parse_bytes(&[0xff; 40]),
            Err(Invalid::NotAscii { at: 0, byte: 0xff })
        ));
        assert!(matches!(
            parse_bytes(&[b'a'; 129]),
            Err(Invalid::TooLong(129))
        ));
    }

    proptest! {
        /// Any bytes: a verdict, never a panic; and whatever parses is within the limits.
        #[test]
        fn any_bytes_give_a_verdict(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(c) = parse_bytes(&raw) {
                prop_assert!(raw.len() <= MAX_BYTES);
                prop_assert_eq!(c.sha256_prefix.len(), HASH_HEX);
                prop_assert!(c.url.starts_with("http://") || c.url.starts_with("https://"));
            }
        }

        /// Near-misses of the real form (printable ASCII around the separators).
        #[test]
        fn near_misses_give_a_verdict(text in "[0-9a-fA-F]{30,34}:[0-9]{0,3}:?[0-9]{0,3}:?(https?|ftp)?:?/{0,3}[ -~]{0,60}") {
            let _ = parse(&text);
        }

        /// What parses prints back to the same text.
        #[test]
        fn well_formed_round_trip(hash in "[0-9a-f]{32}", block in proptest::option::of((0u64..u64::MAX, 0u32..u32::MAX)), host in "[a-z][a-z0-9-]{0,20}\\.[a-z]{2,6}", path in "[a-zA-Z0-9/_.-]{0,30}") {
            let payment = block.map(|(b, i)| format!("{b}:{i}:")).unwrap_or_default();
            let text = format!("{hash}:{payment}https://{host}/{path}");
            prop_assume!(text.len() <= MAX_BYTES);
            let c = parse(&text).unwrap();
            prop_assert_eq!(c.to_string(), text);
        }
    }
}
