//! The validator's fetcher: downloads the URL a commitment names and hands back the bytes only
//! when they are the component the commitment promised.
//!
//! The URL is written by anyone, so every step assumes it is hostile:
//! - only http and https, no proxy (a proxy would hide where the request really goes);
//! - no private, loopback, link-local or otherwise internal address, checked on the URL's
//!   literal host, on every redirect target, and on every address a DNS name resolves to (the
//!   resolver hands the connector only the addresses that passed, so a name cannot resolve to
//!   a public address for the check and a private one for the connection);
//! - a size cap enforced while reading, whatever Content-Length says, and one deadline for the
//!   whole request including its body;
//! - the sha256 must match the commitment, and the bytes must be a component that passes the
//!   sandbox's load-time checks, before anything else sees them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crusades_sandbox::failure::FailureCode;
use crusades_sandbox::runner::{sha256_hex, Sandbox};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use url::{Host, Url};

use crate::chain::commitment::Commitment;

/// What the fetcher allows a download to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// The largest submission accepted, in bytes.
    pub max_bytes: u64,
    /// The whole request: connecting, redirects, headers and body.
    pub timeout: Duration,
    /// Each TCP connect.
    pub connect_timeout: Duration,
    /// Redirect hops followed before giving up.
    pub max_redirects: usize,
    /// Whether loopback addresses (127/8, ::1, `localhost`) may be fetched: for tests and
    /// local development only, never on a validator facing the chain.
    pub allow_loopback: bool,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 32 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 3,
            allow_loopback: false,
        }
    }
}

/// A downloaded submission whose hash matches its commitment and which passed the sandbox's
/// load-time checks.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// 64 lowercase hex digits.
    pub sha256: String,
    /// Where the bytes came from after redirects.
    pub final_url: String,
}

/// Why a fetch failed. [`FetchError::is_transient`] says whether to retry later or refuse the
/// submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the URL {url:?} is not usable ({reason}); commit an http(s) URL with a host")]
    InvalidUrl { url: String, reason: String },
    #[error("the URL {url:?} is not http or https; only http(s) submissions are fetched")]
    UnsupportedScheme { url: String },
    #[error("refused to fetch {url:?}: {reason}; serve the submission from a public address")]
    ForbiddenAddress { url: String, reason: String },
    #[error(
        "more than {limit} redirects on the way to {url:?}; commit the URL the file is served from"
    )]
    TooManyRedirects { url: String, limit: usize },
    #[error(
        "the redirect from {url:?} is unusable ({message}); commit the URL the file is served from"
    )]
    BadRedirect { url: String, message: String },
    #[error("{url:?} answered HTTP {status}{}", status_advice(*status))]
    Status { url: String, status: u16 },
    #[error(
        "{url:?} serves more than {limit} bytes, the most a submission may have; submit a smaller component"
    )]
    TooLarge { url: String, limit: u64 },
    #[error("fetching {url:?} took longer than the fetch timeout; it will be retried")]
    Timeout { url: String },
    #[error("cannot connect to {url:?} ({message}); it will be retried")]
    Connect { url: String, message: String },
    #[error("the transfer from {url:?} broke off ({message}); it will be retried")]
    Transfer { url: String, message: String },
    #[error(
        "the downloaded file's sha256 is {actual}, which does not start with the committed {expected_prefix}; commit the hash of the file the URL serves"
    )]
    HashMismatch {
        expected_prefix: String,
        actual: String,
    },
    #[error("the downloaded file is not a WebAssembly component: {reason}")]
    NotWasm { reason: String },
    #[error("the downloaded component fails the sandbox's load-time checks: {reason}")]
    InvalidComponent { reason: String },
    #[error("the sandbox could not check the component ({0}); this is the validator's fault, not the submission's, and it will be retried")]
    Sandbox(String),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Statuses that may pass by themselves: a timeout, a rate limit, a failing server.
fn retried(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

fn status_advice(status: u16) -> &'static str {
    match status {
        s if retried(s) => "; it will be retried",
        300..=399 => " (a redirect that was not followed); commit the URL the file is served from",
        _ => "; commit a URL that serves the file",
    }
}

impl FetchError {
    /// Whether the failure may pass by itself (timeouts, connection failures, an overloaded or
    /// failing server, the validator's own sandbox), so the daemon retries with backoff. Every
    /// other failure is the submission's and final: it is refused.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Timeout { .. }
            | FetchError::Connect { .. }
            | FetchError::Transfer { .. }
            | FetchError::Sandbox(_) => true,
            FetchError::Status { status, .. } => retried(*status),
            _ => false,
        }
    }
}

/// Whether `ip` is an address the fetcher must never connect to: anything that is not a
/// public unicast address (loopback only when `allow_loopback`), including IPv6 forms that
/// embed such an IPv4 address.
pub fn is_forbidden(ip: IpAddr, allow_loopback: bool) -> bool {
    forbidden_reason(ip, allow_loopback).is_some()
}

/// Why `ip` is forbidden, in words for the error message.
fn forbidden_reason(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4, allow_loopback),
        IpAddr::V6(v6) => forbidden_v6(v6, allow_loopback),
    }
}

fn forbidden_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified or 'this network' address (0.0.0.0/8)",
        (10, _, _) => "a private address (10.0.0.0/8)",
        (172, 16..=31, _) => "a private address (172.16.0.0/12)",
        (192, 168, _) => "a private address (192.168.0.0/16)",
        (100, 64..=127, _) => "a carrier-grade NAT address (100.64.0.0/10)",
        (169, 254, _) => "a link-local address (169.254.0.0/16)",
        (192, 0, 0) => "an IETF protocol address (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address (240.0.0.0/4)",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("the unspecified address (::)");
    }
    // Forms that carry an IPv4 address reach that address (mapped: the local stack; the
    // deprecated compatible form and NAT64: a translator), so they get its answer.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4, allow_loopback);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0; 6] {
        return forbidden_v4(embedded(s[6], s[7]), allow_loopback);
    }
    // NAT64 and 6to4 (the IPv4 address in bits 16..48) go through a translator or relay,
    // never to this machine's loopback, so loopback is refused there even when allowed.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(s[6], s[7]), false);
    }
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2]), false);
    }
    Some(match s[0] {
        0xfc00..=0xfdff => "a unique local address (fc00::/7)",
        0xfe80..=0xfebf => "a link-local address (fe80::/10)",
        0xfec0..=0xfeff => "a site-local address (fec0::/10)",
        0xff00..=0xffff => "a multicast address",
        0x0064 if s[1] == 0xff9b && s[2] == 1 => "a local-use NAT64 address (64:ff9b:1::/48)",
        0x0100 if s[1..4] == [0, 0, 0] => "a discard-only address (100::/64)",
        0x2001 if s[1] == 0x0db8 => "a documentation address (2001:db8::/32)",
        // Teredo hides the address it tunnels to.
        0x2001 if s[1] == 0 => "a Teredo address (2001::/32)",
        0x3fff if s[1] <= 0x0fff => "a documentation address (3fff::/20)",
        _ => return None,
    })
}

/// Whether a host name is a name for this machine (RFC 6761: `localhost` and its
/// subdomains), which no resolver answer should be trusted for.
fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// The checks a URL must pass before it is requested: its scheme and, when its host is an IP
/// literal or a loopback name, the host itself (reqwest asks the resolver only about names).
fn check_url(url: &Url, allow_loopback: bool) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::UnsupportedScheme {
            url: url.to_string(),
        });
    }
    let forbidden = |reason: String| FetchError::ForbiddenAddress {
        url: url.to_string(),
        reason,
    };
    match url.host() {
        None => Err(FetchError::InvalidUrl {
            url: url.to_string(),
            reason: "it has no host".into(),
        }),
        Some(Host::Ipv4(v4)) => check_ip(IpAddr::V4(v4), allow_loopback).map_err(forbidden),
        Some(Host::Ipv6(v6)) => check_ip(IpAddr::V6(v6), allow_loopback).map_err(forbidden),
        Some(Host::Domain(name)) => {
            if !allow_loopback && is_localhost_name(name) {
                Err(forbidden(format!("{name} names this machine")))
            } else {
                Ok(())
            }
        }
    }
}

fn check_ip(ip: IpAddr, allow_loopback: bool) -> Result<(), String> {
    match forbidden_reason(ip, allow_loopback) {
        Some(why) => Err(format!("{ip} is {why}")),
        None => Ok(()),
    }
}

/// The system resolver with every forbidden address removed from its answers.
struct GuardedResolver {
    allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_string();
        Box::pin(async move {
            if !allow_loopback && is_localhost_name(&host) {
                return Err(resolver_error(&host, format!("{host} names this machine")));
            }
            // The port is a placeholder: the connector sets the URL's own.
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| {
                    Box::new(FetchError::Connect {
                        url: host.clone(),
                        message: format!("cannot resolve {host}: {e}"),
                    }) as Box<dyn std::error::Error + Send + Sync>
                })?
                .collect();
            let mut refused = Vec::new();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match check_ip(a.ip(), allow_loopback) {
                    Err(why) => {
                        refused.push(why);
                        false
                    }
                    Ok(()) => true,
                })
                .collect();
            if allowed.is_empty() {
                let reason = if refused.is_empty() {
                    format!("{host} resolves to no address")
                } else {
                    format!(
                        "{host} resolves only to forbidden addresses: {}",
                        refused.join(", ")
                    )
                };
                return Err(resolver_error(&host, reason));
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

fn resolver_error(host: &str, reason: String) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(FetchError::ForbiddenAddress {
        url: host.to_string(),
        reason,
    })
}

/// The redirect rule: at most `max_redirects` hops, each to an http(s) URL whose host passes
/// [`check_url`] (names are checked again by the resolver when connecting).
fn redirect_policy(max_redirects: usize, allow_loopback: bool) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        // `previous` starts with the URL first requested, so it counts the hops so far.
        if attempt.previous().len() > max_redirects {
            let url = attempt.url().to_string();
            return attempt.error(FetchError::TooManyRedirects {
                url,
                limit: max_redirects,
            });
        }
        match check_url(attempt.url(), allow_loopback) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

/// Downloads submissions under a [`FetchPolicy`].
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: FetchPolicy,
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Result<Fetcher, FetchError> {
        // reqwest is built without a default crypto provider and panics without one. An error
        // means another part of the process installed one first, which serves as well. ring
        // is deprecated for lacking post-quantum key exchange, but it is the provider this
        // build links (subxt uses it too), and what is fetched is checked by its hash anyway.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(policy.timeout)
            .connect_timeout(policy.connect_timeout)
            .redirect(redirect_policy(policy.max_redirects, policy.allow_loopback))
            .dns_resolver(GuardedResolver {
                allow_loopback: policy.allow_loopback,
            })
            .build()
            .map_err(|e| FetchError::Client(error_chain(&e)))?;
        Ok(Fetcher { client, policy })
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Downloads what `commitment` names and returns it once its hash matches and it passes
    /// the sandbox's load-time checks.
    pub async fn fetch(&self, commitment: &Commitment) -> Result<Fetched, FetchError> {
        let (bytes, final_url) = self.download(&commitment.url).await?;
        let sha256 = sha256_hex(&bytes);
        if !commitment.matches(&sha256) {
            return Err(FetchError::HashMismatch {
                expected_prefix: commitment.sha256_prefix.clone(),
                actual: sha256,
            });
        }
        check_header(&bytes)?;
        let bytes = check_component(bytes).await?;
        Ok(Fetched {
            bytes,
            sha256,
            final_url,
        })
    }

    /// The body at `url`, at most `max_bytes` of it, and the URL it finally came from.
    async fn download(&self, url: &str) -> Result<(Vec<u8>, String), FetchError> {
        let parsed = Url::parse(url).map_err(|e| FetchError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        check_url(&parsed, self.policy.allow_loopback)?;
        let mut response = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| classify(e, url))?;
        let final_url = response.url().to_string();
        let status = response.status();
        if status.is_redirection() {
            // A redirect reqwest did not follow: its Location was not a URL it could resolve
            // (a file: or other non-http target among them).
            if let Some(target) = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
            {
                let next = Url::parse(&final_url).and_then(|base| base.join(target));
                if let Ok(next) = next {
                    check_url(&next, self.policy.allow_loopback)?;
                }
                return Err(FetchError::BadRedirect {
                    url: final_url,
                    message: format!("HTTP {} to {target:?}", status.as_u16()),
                });
            }
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: final_url,
                status: status.as_u16(),
            });
        }
        let limit = self.policy.max_bytes;
        let too_large = || FetchError::TooLarge {
            url: final_url.clone(),
            limit,
        };
        let declared = response.content_length();
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        // Content-Length is a hint only; the cap is enforced on what arrives.
        let capacity = declared.unwrap_or(0).min(limit);
        let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify(e, &final_url))?
        {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, final_url))
    }
}

/// The sandbox's cheap header test, so that a file that is plainly not a component is refused
/// without starting an engine.
fn check_header(bytes: &[u8]) -> Result<(), FetchError> {
    crusades_sandbox::runner::check_header(bytes).map_err(refusal)
}

/// What a sandbox refusal means for a download: not WebAssembly, an invalid component, or
/// (the validator's own trouble, worth a retry) a sandbox that failed.
fn refusal(failure: crusades_sandbox::Failure) -> FetchError {
    match failure.code {
        FailureCode::NotWasm | FailureCode::CoreModule => FetchError::NotWasm {
            reason: failure.to_string(),
        },
        FailureCode::Internal | FailureCode::Device | FailureCode::WorkerKilled => {
            FetchError::Sandbox(failure.to_string())
        }
        _ => FetchError::InvalidComponent {
            reason: failure.to_string(),
        },
    }
}

/// Every load-time check the sandbox makes (validation, imports, the `run` export), off the
/// async threads since compiling takes CPU time.
async fn check_component(bytes: Vec<u8>) -> Result<Vec<u8>, FetchError> {
    let checked = tokio::task::spawn_blocking(move || {
        let result = Sandbox::new().and_then(|sandbox| sandbox.compile(&bytes).map(|_| ()));
        (bytes, result)
    })
    .await
    .map_err(|e| FetchError::Sandbox(format!("the component check did not finish: {e}")))?;
    match checked {
        (bytes, Ok(())) => Ok(bytes),
        (_, Err(failure)) => Err(refusal(failure)),
    }
}

/// Turns a reqwest error into the [`FetchError`] that says what happened. Refusals made by the
/// redirect policy or the resolver travel inside reqwest's error as its source, and come back
/// out as themselves.
fn classify(e: reqwest::Error, url: &str) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(ours) = err.downcast_ref::<FetchError>() {
            return ours.clone();
        }
        source = err.source();
    }
    let url = e.url().map_or_else(|| url.to_string(), Url::to_string);
    if e.is_timeout() {
        FetchError::Timeout { url }
    } else if e.is_redirect() {
        FetchError::BadRedirect {
            url,
            message: error_chain(&e),
        }
    } else if e.is_connect() {
        FetchError::Connect {
            url,
            message: error_chain(&e),
        }
    } else if e.is_builder() {
        FetchError::InvalidUrl {
            url,
            reason: error_chain(&e),
        }
    } else {
        FetchError::Transfer {
            url,
            message: error_chain(&e),
        }
    }
}

/// An error and its sources, joined: reqwest's own message alone is often just "error sending
/// request".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_forbidden() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_forbidden(v4(ip), true), "{ip}");
            assert!(is_forbidden(v4(ip), false), "{ip}");
        }
        for ip in [
            "::",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "3fff::1",
        ] {
            assert!(is_forbidden(v6(ip), true), "{ip}");
            assert!(is_forbidden(v6(ip), false), "{ip}");
        }
    }

    #[test]
    fn loopback_is_forbidden_unless_allowed() {
        for ip in [
            v4("127.0.0.1"),
            v4("127.1.2.3"),
            v6("::1"),
            v6("::ffff:127.0.0.1"),
        ] {
            assert!(is_forbidden(ip, false), "{ip}");
            assert!(!is_forbidden(ip, true), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            v4("1.1.1.1"),
            v4("8.8.8.8"),
            v4("172.15.255.255"),
            v4("172.32.0.1"),
            v4("100.63.255.255"),
            v4("100.128.0.1"),
            v4("192.169.0.1"),
            v4("223.255.255.255"),
            v6("2606:4700:4700::1111"),
            v6("2a00:1450:4001::1"),
            v6("::ffff:8.8.8.8"),
            v6("64:ff9b::808:808"),
            v6("2002:808:808::1"),
        ] {
            assert!(!is_forbidden(ip, false), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let check = |u: &str, allow| check_url(&Url::parse(u).unwrap(), allow);
        assert!(check("https://example.org/x.wasm", false).is_ok());
        assert!(check("http://127.0.0.1:8080/", true).is_ok());
        for (u, allow) in [
            ("http://127.0.0.1/", false),
            // The URL parser turns other spellings of IPv4 into the same literal.
            ("http://2130706433/", false),
            ("http://0x7f.1/", false),
            ("http://10.1.2.3/", true),
            ("http://[::ffff:10.0.0.1]/", true),
            ("http://[fe80::1]/", true),
            ("http://localhost/", false),
            ("http://LOCALHOST./", false),
            ("http://a.localhost/", false),
        ] {
            assert!(
                matches!(check(u, allow), Err(FetchError::ForbiddenAddress { .. })),
                "{u}: {:?}",
                check(u, allow)
            );
        }
        assert!(matches!(
            check("file:///etc/passwd", true),
            Err(FetchError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            check("ftp://example.org/", true),
            Err(FetchError::UnsupportedScheme { .. })
        ));
    }

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header(b"<html>"),
            Err(FetchError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(FetchError::NotWasm { reason }) if reason.contains("core")
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header(b"\0asm\x0d\0\x02\0"),
            Err(FetchError::NotWasm { .. })
        ));
    }

    #[test]
    fn transient_failures_are_told_from_fatal_ones() {
        let status = |status| FetchError::Status {
            url: String::new(),
            status,
        };
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status(s).is_transient(), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410] {
            assert!(!status(s).is_transient(), "{s}");
        }
        assert!(FetchError::Timeout { url: String::new() }.is_transient());
        assert!(!FetchError::HashMismatch {
            expected_prefix: String::new(),
            actual: String::new()
        }
        .is_transient());
        assert!(!FetchError::ForbiddenAddress {
            url: String::new(),
            reason: String::new()
        }
        .is_transient());
    }

    /// The resolver refuses names that resolve only to loopback, and the refusal comes back
    /// out of reqwest as itself: the path a name that passes the literal check would take.
    #[tokio::test]
    async fn the_resolver_refuses_loopback_names() {
        let fetcher = Fetcher::new(FetchPolicy {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            ..FetchPolicy::default()
        })
        .unwrap();
        // Straight to the client, past the literal check.
        let e = fetcher
            .client
            .get("http://localhost:9/")
            .send()
            .await
            .unwrap_err();
        let e = classify(e, "http://localhost:9/");
        assert!(
            matches!(&e, FetchError::ForbiddenAddress { reason, .. } if reason.contains("localhost")),
            "{e:?}"
        );
        assert!(!e.is_transient());
    }

    proptest! {
        /// An IPv4 address and its IPv6 mapped and compatible forms get the same answer; its NAT64
        /// form the answer without the loopback exception.
        #[test]
        fn embedded_ipv4_gets_the_ipv4_answer(raw in any::<u32>(), allow in any::<bool>()) {
            let ip = Ipv4Addr::from(raw);
            let want = is_forbidden(IpAddr::V4(ip), allow);
            prop_assert_eq!(is_forbidden(IpAddr::V6(ip.to_ipv6_mapped()), allow), want);
            let nat64 = Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(raw));
            prop_assert_eq!(
                is_forbidden(IpAddr::V6(nat64), allow),
                is_forbidden(IpAddr::V4(ip), false)
            );
            // ::1 and :: are IPv6's own loopback and unspecified addresses.
            if raw > 1 {
                prop_assert_eq!(is_forbidden(IpAddr::V6(ip.to_ipv6_compatible()), allow), want);
            }
        }

        /// Any address: an answer, never a panic; and no answer depends on allow_loopback
        /// except for loopback addresses.
        #[test]
        fn only_loopback_depends_on_the_flag(raw in any::<u128>()) {
            let ip = IpAddr::V6(Ipv6Addr::from(raw));
            let strict = is_forbidden(ip, false);
            let lax = is_forbidden(ip, true);
            let v6 = Ipv6Addr::from(raw);
            let compatible = v6.segments()[..6] == [0; 6];
            let loopback = v6.is_loopback()
                || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback())
                || (compatible && v6.to_ipv4().is_some_and(|v| v.is_loopback()));
            prop_assert!(strict || !lax);
            if !loopback {
                prop_assert_eq!(strict, lax);
            }
        }
    }
}
