//! The webhook sink's options against real HTTP(S) servers on loopback: every request the
//! consumer sends is signed, and the signatures verify with an independent implementation (the
//! Python receiver code of `docs/sinks.md`, run with `python3`) but not with a wrong secret; the
//! header of `--http-header-file` reaches the receiver; a receiver whose certificate comes from
//! a private CA is trusted with `--http-ca-file` and refused without it; `--http-concurrency`
//! bounds the requests in flight.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::start_consumer;
use rebound_consumer::sink::{ApplyItem, HttpSink, HttpSinkSettings, SIGNATURE_HEADER, TrustedCa};
use rebound_retry::ErrorKind;
use rebound_testkit::{create_test_topics, note, produce_notes, unique_prefix, wait_for};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

type ReceivedLog = Arc<Mutex<Vec<Received>>>;

/// A receiver that answers 200 and keeps every request's headers and exact body bytes.
fn recording_receiver() -> (axum::Router, ReceivedLog) {
    let log = ReceivedLog::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(log): State<ReceivedLog>, headers: HeaderMap, body: Bytes| async move {
                    log.lock().expect("lock").push(Received { headers, body });
                    StatusCode::OK
                },
            ),
        )
        .with_state(Arc::clone(&log));
    (app, log)
}

/// Serves `app` over plain HTTP on a loopback port; returns the base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// Produces `count` notes under `prefix`, runs a consumer with `flags` against `url` until the
/// receiver has `count` requests, and returns them.
async fn deliver_through_the_consumer(
    prefix: &str,
    count: usize,
    url: &str,
    log: &ReceivedLog,
    flags: &[&str],
) -> Vec<Received> {
    create_test_topics(prefix, &TOPICS, 2).await;
    let notes: Vec<_> = (0..count).map(|index| note(&format!("note-{index}"), 1)).collect();
    produce_notes(&format!("{prefix}notes"), &notes).await;
    let mut argv = vec!["--topic-prefix", prefix, "--sink", url];
    argv.extend_from_slice(flags);
    let consumer = start_consumer(&argv);
    let received = wait_for("every note at the receiver", Duration::from_secs(60), || async {
        let seen = log.lock().expect("lock").clone();
        (seen.len() >= count).then_some(seen)
    })
    .await;
    consumer.stop().await;
    received
}

/// Writes `text` to a new file in `directory` and returns its path as text.
fn write_file(directory: &Path, name: &str, text: &str) -> String {
    let path = directory.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// The Python code block under "## Verifying webhook signatures" in `docs/sinks.md`: the
/// receiver-side verification the documentation gives users.
fn documented_python_verifier() -> String {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/sinks.md")).expect("docs/sinks.md");
    let section = docs
        .split("## Verifying webhook signatures")
        .nth(1)
        .expect("docs/sinks.md has a section \"Verifying webhook signatures\"");
    let block = section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section has a python code block");
    block.to_owned()
}

/// Runs the documented Python verifier over every received request with `secret`; returns
/// whether python3 accepted all of them, and its output.
fn python_verifies_all(received: &[Received], secret: &str) -> (bool, String) {
    let directory = tempfile::tempdir().expect("temp dir");
    // One line per request: the signature header, a tab, the body in hex (exact bytes).
    let mut requests = String::new();
    for request in received {
        let signature = request
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        requests.push_str(&format!("{signature}\t{}\n", hex_of(&request.body)));
    }
    let requests_file = write_file(directory.path(), "requests.tsv", &requests);
    let driver = format!(
        "{verifier}\n\n\
         import sys\n\
         secret = sys.argv[1].encode()\n\
         results = []\n\
         for line in open(sys.argv[2]):\n\
         \x20   header, body = line.rstrip('\\n').split('\\t')\n\
         \x20   results.append(verify_rebound_signature(secret, header, bytes.fromhex(body)))\n\
         print(f'verified {{sum(results)}} of {{len(results)}}')\n\
         sys.exit(0 if results and all(results) else 1)\n",
        verifier = documented_python_verifier()
    );
    let script = write_file(directory.path(), "verify.py", &driver);
    let output = Command::new("python3")
        .args([&script, secret, &requests_file])
        .output()
        .expect("python3 runs (it is needed by this test)");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), shown)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

// The Rust receiver code of docs/sinks.md, compiled here: `the_documented_rust_verifier_is_this_one`
// checks that the documentation shows exactly this text.
// docs:rust-verifier-start
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Whether `header` (the value of X-Rebound-Signature) signs `body` (the raw request body) with
/// `secret`, and its timestamp is within `tolerance_seconds` of `now_unix`.
fn verify_rebound_signature(secret: &[u8], header: &str, body: &[u8], now_unix: u64, tolerance_seconds: u64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = Some(value),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else { return false };
    let Ok(seconds) = timestamp.parse::<u64>() else {
        return false;
    };
    if seconds.abs_diff(now_unix) > tolerance_seconds {
        return false; // outside the replay window
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    signatures
        .iter()
        .any(|signature| hex::decode(signature).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok()))
}
// docs:rust-verifier-end

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_signed_and_verifies_with_python_hmac_but_not_with_a_wrong_secret() {
    const SECRET: &str = "whsec-3b9f0c2d8e7a41f6a5c4d3e2f1a0b9c8";
    let prefix = unique_prefix("signed");
    let (app, log) = recording_receiver();
    let url = format!("{}/hook", serve(app).await);
    let directory = tempfile::tempdir().expect("temp dir");
    // As an operator would write it: with a trailing newline, which is not part of the secret.
    let secret_file = write_file(directory.path(), "signing-secret", &format!("{SECRET}\n"));
    let received =
        deliver_through_the_consumer(&prefix, 12, &url, &log, &["--http-signing-secret-file", &secret_file]).await;

    for request in &received {
        let signature = request.headers.get(SIGNATURE_HEADER).expect("every request is signed");
        let signature = signature.to_str().expect("text");
        assert!(signature.starts_with("t=") && signature.contains(",v1="), "{signature}");
        assert!(
            verify_rebound_signature(SECRET.as_bytes(), signature, &request.body, now_unix(), 300),
            "the Rust verifier refuses {signature}"
        );
        assert!(!verify_rebound_signature(
            b"another-secret-of-some-length",
            signature,
            &request.body,
            now_unix(),
            300
        ));
    }
    let (accepted, shown) = python_verifies_all(&received, SECRET);
    assert!(accepted, "python's hmac refused the signatures: {shown}");
    assert!(
        shown.contains(&format!("verified {0} of {0}", received.len())),
        "{shown}"
    );
    let (accepted, shown) = python_verifies_all(&received, "whsec-not-the-secret-0000000000000");
    assert!(!accepted, "a wrong secret verified: {shown}");
    assert!(shown.contains(&format!("verified 0 of {}", received.len())), "{shown}");
}

#[test]
fn the_documented_rust_verifier_is_this_one() {
    let this_file = include_str!("http_sink_options.rs");
    let code = this_file
        .split("// docs:rust-verifier-start\n")
        .nth(1)
        .and_then(|rest| rest.split("// docs:rust-verifier-end").next())
        .expect("markers");
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/sinks.md")).expect("docs/sinks.md");
    assert!(
        docs.contains(code.trim()),
        "docs/sinks.md must show the Rust verifier of this test verbatim:\n{code}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_from_a_file_reaches_the_receiver_with_every_request() {
    let prefix = unique_prefix("header");
    let (app, log) = recording_receiver();
    let url = format!("{}/hook", serve(app).await);
    let directory = tempfile::tempdir().expect("temp dir");
    let header_file = write_file(
        directory.path(),
        "sink-header",
        "# the receiver's token\nAuthorization: Bearer sink-token-4c1d\n",
    );
    let received = deliver_through_the_consumer(&prefix, 6, &url, &log, &["--http-header-file", &header_file]).await;
    for request in &received {
        assert_eq!(
            request.headers.get("authorization").map(|value| value.as_bytes()),
            Some(&b"Bearer sink-token-4c1d"[..])
        );
        // Unsigned unless a secret is given.
        assert!(request.headers.get(SIGNATURE_HEADER).is_none());
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, both made on the fly.
struct PrivateCa {
    ca_pem: String,
    server_certificate: rcgen::Certificate,
    server_key: rcgen::KeyPair,
}

fn private_ca() -> PrivateCa {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rebound test receiver CA");
    let ca_certificate = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    let server_certificate = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    PrivateCa {
        ca_pem: ca_certificate.pem(),
        server_certificate,
        server_key,
    }
}

/// Serves `app` over TLS with the CA's server certificate on a loopback port; returns the base
/// URL.
async fn serve_tls(app: axum::Router, ca: &PrivateCa) -> String {
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::try_from(ca.server_key.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![ca.server_certificate.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends its handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(connection).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://{address}")
}

fn items(count: usize) -> Vec<ApplyItem> {
    (0..count)
        .map(|index| ApplyItem {
            note: note(&format!("note-{index}"), 1),
            previous_attempts: 0,
            last_tier: None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_a_private_ca_is_trusted_with_the_ca_file_and_refused_without_it() {
    let ca = private_ca();
    let (app, log) = recording_receiver();
    let url = format!("{}/hook", serve_tls(app, &ca).await);
    let directory = tempfile::tempdir().expect("temp dir");
    let ca_file = write_file(directory.path(), "receiver-ca.pem", &ca.ca_pem);
    let settings = HttpSinkSettings::new(Duration::from_secs(10), Duration::from_secs(30));

    // The bundled and system roots do not know the private CA: a transient TLS failure.
    let untrusting = HttpSink::new(&url, &settings).expect("sink");
    let results = untrusting.apply_batch(&items(3)).await;
    for result in &results {
        let failure = result.as_ref().expect_err("the receiver's certificate is not trusted");
        assert_eq!(failure.kind, ErrorKind::Transient, "{failure:?}");
        assert!(
            failure.message.to_lowercase().contains("certificate"),
            "the failure does not name the certificate: {}",
            failure.message
        );
    }
    assert!(log.lock().expect("lock").is_empty());

    let trusting = HttpSink::new(
        &url,
        &HttpSinkSettings {
            trusted_ca: Some(TrustedCa::from_file(Path::new(&ca_file)).expect("CA file")),
            ..settings
        },
    )
    .expect("sink");
    let results = trusting.apply_batch(&items(3)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(log.lock().expect("lock").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_setting_bounds_the_requests_in_flight() {
    const CONCURRENCY: usize = 3;
    #[derive(Default)]
    struct InFlight {
        now: AtomicUsize,
        most: AtomicUsize,
        done: AtomicUsize,
    }
    let in_flight = Arc::new(InFlight::default());
    let app = axum::Router::new()
        .route(
            "/hook",
            post(|State(in_flight): State<Arc<InFlight>>| async move {
                let now = in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
                in_flight.most.fetch_max(now, Ordering::SeqCst);
                // Held long enough for the sink to start every request it is allowed to.
                tokio::time::sleep(Duration::from_millis(100)).await;
                in_flight.now.fetch_sub(1, Ordering::SeqCst);
                in_flight.done.fetch_add(1, Ordering::SeqCst);
                StatusCode::OK
            }),
        )
        .with_state(Arc::clone(&in_flight));
    let url = format!("{}/hook", serve(app).await);
    let sink = HttpSink::new(
        &url,
        &HttpSinkSettings {
            concurrency: CONCURRENCY,
            ..HttpSinkSettings::new(Duration::from_secs(10), Duration::from_secs(60))
        },
    )
    .expect("sink");
    let results = sink.apply_batch(&items(24)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(in_flight.done.load(Ordering::SeqCst), 24);
    assert_eq!(in_flight.most.load(Ordering::SeqCst), CONCURRENCY);
}
