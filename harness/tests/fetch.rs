//! The validator's fetcher against a hostile HTTP server on loopback: sizes, timeouts, hashes,
//! redirects to internal addresses, and files that are not components.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crusades::chain::commitment::{parse, Commitment};
use crusades::validator::fetch::{FetchError, FetchPolicy, Fetched, Fetcher};
use crusades_sandbox::runner::sha256_hex;
use futures::StreamExt;

const HTML: &[u8] = b"<!doctype html><html><body>not a component</body></html>";
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// A component's header (version 0x0d, layer 1) over bytes that are no component.
const GARBAGE_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0 garbage, not sections";

/// The test server: its base URL and how many requests reached it.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)], "").into_response()
}

/// Starts the server on 127.0.0.1:0; `component` is what /component serves.
async fn serve(component: Vec<u8>) -> Server {
    let component = Bytes::from(component);
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new()
        .route(
            "/component",
            get(move || {
                let component = component.clone();
                async move { component }
            }),
        )
        .route("/to-component", get(|| async { redirect("/component") }))
        .route("/html", get(|| async { HTML }))
        .route("/core", get(|| async { CORE_MODULE }))
        .route("/garbage", get(|| async { GARBAGE_COMPONENT }))
        // Claims a gigabyte, sends one chunk, then never finishes: only a client that trusts
        // the header to refuse returns.
        .route(
            "/big",
            get(|| async {
                let body = futures::stream::once(async {
                    Ok::<_, Infallible>(Bytes::from_static(b"\0asm"))
                })
                .chain(futures::stream::pending());
                Response::builder()
                    .header(header::CONTENT_LENGTH, (1u64 << 30).to_string())
                    .body(Body::from_stream(body))
                    .unwrap()
            }),
        )
        // No Content-Length and no end: only a client that counts what arrives returns.
        .route(
            "/endless",
            get(|| async {
                let chunk = Bytes::from(vec![0u8; 4096]);
                Body::from_stream(futures::stream::repeat(Ok::<_, Infallible>(chunk)))
            }),
        )
        // A few bytes, then silence for longer than the test's timeout.
        .route(
            "/slow",
            get(|| async {
                let body = futures::stream::once(async {
                    Ok::<_, Infallible>(Bytes::from_static(b"\0asm"))
                })
                .chain(futures::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, Infallible>(Bytes::from_static(b"\x0d\0\x01\0"))
                }));
                Body::from_stream(body)
            }),
        )
        .route(
            "/status/{code}",
            get(|Path(code): Path<u16>| async move {
                StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT)
            }),
        )
        .route("/to-10", get(|| async { redirect("http://10.1.2.3/x") }))
        .route("/to-192", get(|| async { redirect("http://192.168.0.1/") }))
        .route(
            "/to-mapped",
            get(|| async { redirect("http://[::ffff:10.0.0.1]/") }),
        )
        .route("/to-file", get(|| async { redirect("file:///etc/passwd") }))
        .route("/to-ftp", get(|| async { redirect("ftp://example.org/x") }))
        .route("/loop", get(|| async { redirect("/loop") }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(req).await
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base: format!("http://{addr}"),
        hits,
    }
}

fn loopback_policy() -> FetchPolicy {
    FetchPolicy {
        allow_loopback: true,
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
        ..FetchPolicy::default()
    }
}

fn fetcher(policy: FetchPolicy) -> Fetcher {
    Fetcher::new(policy).unwrap()
}

/// A commitment to `bytes` at `url`.
fn commit(bytes: &[u8], url: &str) -> Commitment {
    let prefix = &sha256_hex(bytes)[..32];
    parse(&format!("{prefix}:{url}")).unwrap()
}

async fn fetch(policy: FetchPolicy, commitment: &Commitment) -> Result<Fetched, FetchError> {
    fetcher(policy).fetch(commitment).await
}

/// The baseline submission as a component, built once per test binary.
async fn baseline() -> Vec<u8> {
    tokio::task::spawn_blocking(|| std::fs::read(common::baseline_component()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_committed_component_is_fetched_and_checked() {
    let component = baseline().await;
    let server = serve(component.clone()).await;
    let url = server.url("/component");
    let got = fetch(loopback_policy(), &commit(&component, &url))
        .await
        .unwrap();
    assert_eq!(got.bytes, component);
    assert_eq!(got.sha256, sha256_hex(&component));
    assert_eq!(got.sha256.len(), 64);
    assert!(got
        .sha256
        .bytes()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(got.final_url, url);

    // Through one redirect: the final URL is where the bytes came from.
    let got = fetch(
        loopback_policy(),
        &commit(&component, &server.url("/to-component")),
    )
    .await
    .unwrap();
    assert_eq!(got.bytes, component);
    assert_eq!(got.final_url, url);
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_or_without_content_length() {
    let server = serve(Vec::new()).await;
    let policy = FetchPolicy {
        max_bytes: 64 * 1024,
        ..loopback_policy()
    };
    for path in ["/big", "/endless"] {
        let start = Instant::now();
        let e = fetch(policy.clone(), &commit(b"", &server.url(path)))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, FetchError::TooLarge { limit, .. } if *limit == 64 * 1024),
            "{path}: {e:?}"
        );
        assert!(e.to_string().contains("65536 bytes"), "{e}");
        assert!(!e.is_transient());
        // /big never finishes its body and /endless never ends: returning at all (well within
        // the 20 s timeout) means neither was read to its end.
        assert!(start.elapsed() < Duration::from_secs(10), "{path}");
    }
}

#[tokio::test]
async fn a_slow_body_times_out_and_is_retried() {
    let server = serve(Vec::new()).await;
    let policy = FetchPolicy {
        timeout: Duration::from_secs(1),
        ..loopback_policy()
    };
    let start = Instant::now();
    let e = fetch(policy, &commit(b"", &server.url("/slow")))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Timeout { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("retried"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_wrong_hash_is_refused() {
    let server = serve(Vec::new()).await;
    let e = fetch(
        loopback_policy(),
        &commit(b"some other file", &server.url("/garbage")),
    )
    .await
    .unwrap_err();
    match &e {
        FetchError::HashMismatch {
            expected_prefix,
            actual,
        } => {
            assert_eq!(expected_prefix, &sha256_hex(b"some other file")[..32]);
            assert_eq!(actual, &sha256_hex(GARBAGE_COMPONENT));
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_transient());
}

#[tokio::test]
async fn redirects_to_internal_addresses_are_refused_before_connecting() {
    let server = serve(Vec::new()).await;
    for (path, shown) in [
        ("/to-10", "10.1.2.3"),
        ("/to-192", "192.168.0.1"),
        ("/to-mapped", "10.0.0.1"),
    ] {
        let start = Instant::now();
        let e = fetch(loopback_policy(), &commit(b"", &server.url(path)))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, FetchError::ForbiddenAddress { reason, .. } if reason.contains("private")),
            "{path}: {e:?}"
        );
        assert!(e.to_string().contains(shown), "{path}: {e}");
        assert!(!e.is_transient());
        // A connection attempt to an unrouted private address would hang until the 5 s
        // connect timeout.
        assert!(start.elapsed() < Duration::from_secs(2), "{path}");
    }
    // Each request reached the server once: the refused hops were never followed.
    assert_eq!(server.hits(), 3);

    let e = fetch(loopback_policy(), &commit(b"", &server.url("/loop")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FetchError::TooManyRedirects { limit: 3, .. }),
        "{e:?}"
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed() {
    let server = serve(Vec::new()).await;
    let strict = FetchPolicy {
        allow_loopback: false,
        ..loopback_policy()
    };
    let url = server.url("/html");
    let localhost = url.replace("127.0.0.1", "localhost");
    for url in [url, localhost] {
        let e = fetch(strict.clone(), &commit(HTML, &url))
            .await
            .unwrap_err();
        assert!(
            matches!(e, FetchError::ForbiddenAddress { .. }),
            "{url}: {e:?}"
        );
        assert!(!e.is_transient());
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn files_that_are_not_components_are_refused() {
    let server = serve(Vec::new()).await;
    for (path, bytes, why) in [
        ("/html", HTML, "no \\0asm header"),
        ("/core", CORE_MODULE, "core WebAssembly module"),
    ] {
        let e = fetch(loopback_policy(), &commit(bytes, &server.url(path)))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, FetchError::NotWasm { reason } if reason.contains(why)),
            "{path}: {e:?}"
        );
        assert!(!e.is_transient());
    }
    let e = fetch(
        loopback_policy(),
        &commit(GARBAGE_COMPONENT, &server.url("/garbage")),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, FetchError::InvalidComponent { .. }), "{e:?}");
    assert!(!e.is_transient());
}

#[tokio::test]
async fn http_errors_are_fatal_or_transient_by_status() {
    let server = serve(Vec::new()).await;
    let e = fetch(loopback_policy(), &commit(b"", &server.url("/status/404")))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 404, .. }), "{e:?}");
    assert!(!e.is_transient());
    for code in [503, 429] {
        let e = fetch(
            loopback_policy(),
            &commit(b"", &server.url(&format!("/status/{code}"))),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, FetchError::Status { status, .. } if status == code),
            "{e:?}"
        );
        assert!(e.is_transient(), "{code}");
    }
}

#[tokio::test]
async fn redirects_to_other_schemes_are_refused() {
    let server = serve(Vec::new()).await;
    // file:/// has no host, so reqwest cannot follow it and hands back the 302, which the
    // fetcher refuses by its Location; ftp:// is refused by the redirect policy itself.
    for (path, scheme) in [("/to-file", "file:"), ("/to-ftp", "ftp:")] {
        let e = fetch(loopback_policy(), &commit(b"", &server.url(path)))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, FetchError::UnsupportedScheme { url } if url.starts_with(scheme)),
            "{path}: {e:?}"
        );
        assert!(!e.is_transient());
    }
}
