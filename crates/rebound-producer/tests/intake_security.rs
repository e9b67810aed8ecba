//! The intake's controls, over real HTTP(S) on loopback against a real producer process:
//! bearer tokens (401 without, 202 with, revoked by editing the file), mutual TLS with and without
//! a client certificate and a certificate rotated without a restart, the rate limit (429, and
//! every note that got a 202 reaches Kafka), the bound on requests in flight (503) and slow
//! clients cut off. Certificates are made in the test with rcgen.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::note_json;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rebound_producer::auth::token_sha256_hex;
use rebound_testkit::{broker, create_test_topics, free_local_port, read_all, scrape_metrics, unique_prefix, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

/// Nothing listens here: Kafka is "down" for the tests that only look at the outbox.
const NO_BROKER: &str = "127.0.0.1:1";
const MOBILE_TOKEN: &str = "mobile-app-token-4f1c9a7e";
const BATCH_TOKEN: &str = "batch-import-token-8d2e5b10";

/// A producer process serving on a loopback port, and a client for its scheme.
struct Intake {
    child: Child,
    base_url: String,
    client: reqwest::Client,
}

impl Intake {
    /// Starts `serve` with `extra` flags and waits until `/healthz` answers through `client`.
    async fn start(brokers: &str, outbox: &Path, scheme: &str, client: reqwest::Client, extra: &[&str]) -> Self {
        let port = free_local_port();
        let child = common::spawn_serve(brokers, outbox, port, extra);
        let base_url = format!("{scheme}://127.0.0.1:{port}");
        let intake = Self {
            child,
            base_url,
            client,
        };
        wait_for("the intake's /healthz", Duration::from_secs(30), || async {
            let response = intake.client.get(intake.url("/healthz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        intake
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs notes with an optional bearer token; the status and the answer's headers and body.
    async fn post(&self, token: Option<&str>, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.post(self.url("/v1/notes")).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request answered");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap_or(Value::Null))
    }

    /// Notes pending in the outbox, asked with `token`.
    async fn pending(&self, token: &str) -> u64 {
        let response = self
            .client
            .get(self.url("/v1/outbox"))
            .bearer_auth(token)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.expect("json");
        body["pending"].as_u64().expect("pending count")
    }

    /// SIGTERM and wait for a clean exit.
    async fn terminate(self) {
        common::terminate_gracefully(self.child).await;
    }
}

fn write_tokens(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("tokens written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_api_and_a_revoked_token_is_refused_after_the_reload() {
    let work = tempfile::tempdir().expect("tempdir");
    let tokens = work.path().join("tokens");
    write_tokens(
        &tokens,
        &[
            "# hashed entries keep no token in the file".to_owned(),
            format!("mobile:{}", token_sha256_hex(MOBILE_TOKEN)),
            BATCH_TOKEN.to_owned(),
        ],
    );
    let metrics_port = free_local_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let intake = Intake::start(
        NO_BROKER,
        &work.path().join("outbox"),
        "http",
        reqwest::Client::new(),
        &[
            "--auth-tokens-file",
            tokens.to_str().expect("utf-8"),
            "--intake-reload-interval",
            "200ms",
            "--metrics-listen",
            &metrics_listen,
        ],
    )
    .await;

    let (status, headers, body) = intake.post(None, &note_json("no-token", 1)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="rebound""#);
    let (status, headers, _) = intake
        .post(Some("not-a-token-of-the-file"), &note_json("bad-token", 1))
        .await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("invalid_token")
    );
    // The hash itself is no credential.
    let (status, _, _) = intake
        .post(Some(&token_sha256_hex(MOBILE_TOKEN)), &note_json("hash", 1))
        .await;
    assert_eq!(status, 401);
    for path in ["/v1/outbox", "/v1/flags"] {
        let response = intake.client.get(intake.url(path)).send().await.expect("answered");
        assert_eq!(response.status().as_u16(), 401, "{path} needs a token");
    }
    // Probes stay open (readyz says 503 only because Kafka is away).
    let healthz = intake
        .client
        .get(intake.url("/healthz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(healthz.status().as_u16(), 200);
    let readyz = intake.client.get(intake.url("/readyz")).send().await.expect("answered");
    assert_ne!(readyz.status().as_u16(), 401);

    let (status, _, body) = intake.post(Some(MOBILE_TOKEN), &note_json("mobile", 1)).await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = intake.post(Some(BATCH_TOKEN), &note_json("batch", 1)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        intake.pending(BATCH_TOKEN).await,
        2,
        "the refused requests left nothing in the outbox"
    );

    // Revoke the mobile token by editing the file: refused within the reload interval.
    write_tokens(&tokens, &[BATCH_TOKEN.to_owned()]);
    wait_for("the revoked token to be refused", Duration::from_secs(10), || async {
        let (status, _, _) = intake.post(Some(MOBILE_TOKEN), &note_json("revoked", 1)).await;
        assert!(status == 202 || status == 401, "{status}");
        (status == 401).then_some(())
    })
    .await;
    // An invalid file keeps the last good tokens.
    std::fs::write(&tokens, "broken:zz\n").expect("write");
    wait_for(
        "the broken tokens file to be refused",
        Duration::from_secs(10),
        || async {
            let metrics = scrape_metrics(&format!("http://{metrics_listen}/metrics")).await;
            metrics
                .contains(r#"rebound_producer_intake_reload_failures_total{file="auth_tokens"} 1"#)
                .then_some(())
        },
    )
    .await;
    let (status, _, _) = intake.post(Some(BATCH_TOKEN), &note_json("after-broken", 1)).await;
    assert_eq!(status, 202);

    let metrics = reqwest::get(format!("http://{metrics_listen}/metrics"))
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"rebound_producer_requests_rejected_total{reason="unauthenticated"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rebound_producer_intake_reload_failures_total{file="auth_tokens"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(MOBILE_TOKEN) && !metrics.contains(BATCH_TOKEN));
    intake.terminate().await;
}

/// A CA, and certificates it signs.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate and its key, in PEM.
    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let certificate = params.signed_by(&key, &self.issuer).expect("signed");
        (certificate.pem(), key.serialize_pem())
    }

    fn server(&self) -> (String, String) {
        self.sign(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, name: &str) -> reqwest::Identity {
        let (certificate, key) = self.sign(&[name], ExtendedKeyUsagePurpose::ClientAuth);
        reqwest::Identity::from_pem(format!("{certificate}{key}").as_bytes()).expect("identity")
    }
}

fn https_client(trusted: &TestCa, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(trusted.pem().as_bytes()).expect("ca"))
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_a_verified_client_certificate_only_and_a_new_certificate_needs_no_restart() {
    let work = tempfile::tempdir().expect("tempdir");
    let server_ca = TestCa::new("rebound test server ca");
    let client_ca = TestCa::new("rebound test client ca");
    let stranger_ca = TestCa::new("someone else's ca");
    let (cert, key) = server_ca.server();
    let cert_path = work.path().join("server.pem");
    let key_path = work.path().join("server.key");
    let client_ca_path = work.path().join("clients.pem");
    std::fs::write(&cert_path, cert).expect("write");
    std::fs::write(&key_path, key).expect("write");
    std::fs::write(&client_ca_path, client_ca.pem()).expect("write");
    let intake = Intake::start(
        NO_BROKER,
        &work.path().join("outbox"),
        "https",
        https_client(&server_ca, None),
        &[
            "--tls-cert",
            cert_path.to_str().expect("utf-8"),
            "--tls-key",
            key_path.to_str().expect("utf-8"),
            "--tls-client-ca",
            client_ca_path.to_str().expect("utf-8"),
            "--intake-reload-interval",
            "200ms",
        ],
    )
    .await;

    // Without a client certificate: the handshake succeeds (probes are open), the API says 401.
    let (status, headers, _) = intake.post(None, &note_json("anonymous", 1)).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));

    let certified = https_client(&server_ca, Some(client_ca.client("sync-gateway")));
    let response = certified
        .post(intake.url("/v1/notes"))
        .json(&note_json("certified", 1))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 202);
    let outbox: Value = certified
        .get(intake.url("/v1/outbox"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(outbox["pending"], 1, "only the certified request was accepted");

    // A certificate from another CA fails the handshake.
    let stranger = https_client(&server_ca, Some(stranger_ca.client("intruder")));
    let refused = stranger
        .post(intake.url("/v1/notes"))
        .json(&note_json("intruder", 1))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a certificate of an unknown CA is refused: {refused:?}"
    );

    // Plain HTTP to the TLS port gets no API.
    let plain = reqwest::Client::new()
        .post(intake.url("/v1/notes").replace("https://", "http://"))
        .json(&note_json("plain", 1))
        .send()
        .await;
    assert!(plain.map(|response| response.status().as_u16() != 202).unwrap_or(true));

    // Rotate the server certificate to one from a new CA: new connections get it, no restart.
    let rotated_ca = TestCa::new("rebound rotated server ca");
    let (cert, key) = rotated_ca.server();
    std::fs::write(&key_path, key).expect("write");
    std::fs::write(&cert_path, cert).expect("write");
    let rotated_client = https_client(&rotated_ca, Some(client_ca.client("sync-gateway")));
    wait_for(
        "the rotated certificate to be served",
        Duration::from_secs(10),
        || async {
            let response = rotated_client
                .post(intake.url("/v1/notes"))
                .json(&note_json("after-rotation", 1))
                .send()
                .await
                .ok()?;
            (response.status().as_u16() == 202).then_some(())
        },
    )
    .await;
    intake.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_and_every_accepted_note_reaches_kafka() {
    let prefix = unique_prefix("intake-rate");
    create_test_topics(&prefix, &["notes"], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let tokens = work.path().join("tokens");
    write_tokens(&tokens, &[BATCH_TOKEN.to_owned(), MOBILE_TOKEN.to_owned()]);
    let intake = Intake::start(
        &broker(),
        &work.path().join("outbox"),
        "http",
        reqwest::Client::new(),
        &[
            "--topic-prefix",
            &prefix,
            "--auth-tokens-file",
            tokens.to_str().expect("utf-8"),
            "--rate-limit-per-second",
            "2",
            "--rate-limit-burst",
            "5",
        ],
    )
    .await;

    // Forty requests at once from one client: its burst passes, the rest is told to wait.
    let answers = futures::future::join_all((0..40).map(|index| {
        let intake = &intake;
        async move {
            let note_id = format!("rated-{index}");
            let (status, headers, _) = intake.post(Some(BATCH_TOKEN), &note_json(&note_id, 1)).await;
            (note_id, status, headers)
        }
    }))
    .await;
    let accepted: BTreeSet<String> = answers
        .iter()
        .filter(|(_, status, _)| *status == 202)
        .map(|(note_id, _, _)| note_id.clone())
        .collect();
    let limited: Vec<_> = answers.iter().filter(|(_, status, _)| *status == 429).collect();
    assert!(accepted.len() >= 5, "the burst passes: {}", accepted.len());
    assert!(!limited.is_empty(), "forty requests at once are over a burst of five");
    assert_eq!(accepted.len() + limited.len(), 40, "every request got 202 or 429");
    for (_, _, headers) in &limited {
        let retry_after: u64 = headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!(
            (1..=1).contains(&retry_after),
            "at 2/s a place frees within a second: {retry_after}"
        );
    }
    // Another client has its own rate.
    let (status, _, _) = intake.post(Some(MOBILE_TOKEN), &note_json("other-client", 1)).await;
    assert_eq!(status, 202);

    let topic = format!("{prefix}notes");
    let expected = accepted.len() + 1;
    let in_kafka: BTreeSet<String> = wait_for("every accepted note in kafka", Duration::from_secs(60), || async {
        let records = read_all(&topic).await;
        (records.len() >= expected).then(|| {
            records
                .iter()
                .map(|record| String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned())
                .collect()
        })
    })
    .await;
    let mut expected_ids = accepted.clone();
    expected_ids.insert("other-client".to_owned());
    assert_eq!(in_kafka, expected_ids, "exactly the 202'd notes, none of the 429'd");
    intake.terminate().await;
}

/// Reads what the server sends until it closes the connection or `deadline` passes; `None` when
/// the deadline passed with the connection still open.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, deadline: Duration) -> Option<String> {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(deadline, async {
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    outcome.ok().map(|()| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_requests_over_the_bound_in_flight_get_503() {
    let work = tempfile::tempdir().expect("tempdir");
    let tokens = work.path().join("tokens");
    write_tokens(&tokens, &[BATCH_TOKEN.to_owned()]);
    let intake = Intake::start(
        NO_BROKER,
        &work.path().join("outbox"),
        "http",
        reqwest::Client::new(),
        &[
            "--auth-tokens-file",
            tokens.to_str().expect("utf-8"),
            "--max-requests-in-flight",
            "1",
            "--request-body-timeout",
            "2s",
            "--request-header-timeout",
            "1s",
            "--max-notes-per-request",
            "3",
        ],
    )
    .await;
    let address = intake.base_url.trim_start_matches("http://").to_owned();

    // A client that sends its headers and then trickles its body holds the one place in flight.
    let mut trickling = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /v1/notes HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {BATCH_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n["
    );
    trickling.write_all(head.as_bytes()).await.expect("sent");
    let started = tokio::time::Instant::now();
    // Probed with a request that writes nothing, until the trickling one holds the place.
    wait_for("a request over the bound in flight", Duration::from_secs(5), || async {
        let response = intake
            .client
            .get(intake.url("/v1/flags"))
            .bearer_auth(BATCH_TOKEN)
            .send()
            .await
            .expect("answered");
        (response.status().as_u16() == 503).then_some(())
    })
    .await;
    let (status, headers, body) = intake.post(Some(BATCH_TOKEN), &note_json("crowded-out", 1)).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    // The trickling client is answered 408 once the body timeout passes, and cut off.
    let answer = read_until_closed(&mut trickling, Duration::from_secs(10))
        .await
        .expect("the server closed the connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());

    // A client that trickles its headers is cut off after the header timeout.
    let mut slow_headers = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let started = tokio::time::Instant::now();
    let cut_off = tokio::time::timeout(Duration::from_secs(10), async {
        for byte in b"POST /v1/notes HTTP/1.1\r\nhost: x\r\nx-padding: ".iter().cycle() {
            if slow_headers.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut probe = [0_u8; 64];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), slow_headers.read(&mut probe)).await {
                return;
            }
        }
    })
    .await;
    assert!(cut_off.is_ok(), "a client trickling its headers was not cut off");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // With the place free again, a normal request goes through; too many notes are refused.
    let (status, _, body) = intake.post(Some(BATCH_TOKEN), &note_json("welcome", 1)).await;
    assert_eq!(status, 202, "{body}");
    let four = json!([
        note_json("a", 1),
        note_json("b", 1),
        note_json("c", 1),
        note_json("d", 1)
    ]);
    let (status, _, body) = intake.post(Some(BATCH_TOKEN), &four).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("3 allowed"),
        "{body}"
    );
    assert_eq!(
        intake.pending(BATCH_TOKEN).await,
        1,
        "only the welcome note was accepted"
    );
    intake.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_tokens_file_stops_the_start_naming_its_line_before_the_outbox_opens() {
    let work = tempfile::tempdir().expect("tempdir");
    let tokens = work.path().join("tokens");
    write_tokens(
        &tokens,
        &[BATCH_TOKEN.to_owned(), "mobile:not-a-hash-of-a-secret".to_owned()],
    );
    let outbox = work.path().join("outbox");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(env!("CARGO_BIN_EXE_rebound-producer"))
            .args(["--brokers", NO_BROKER, "serve", "--listen"])
            .arg(format!("127.0.0.1:{}", free_local_port()))
            .arg("--outbox-dir")
            .arg(&outbox)
            .arg("--auth-tokens-file")
            .arg(&tokens)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits within 30 s")
    .expect("runs");
    assert_eq!(output.status.code(), Some(2), "bad input");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--auth-tokens-file") && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-a-hash-of-a-secret"),
        "the line is not echoed: {stderr}"
    );
    assert!(!outbox.exists(), "nothing was opened before the tokens were checked");
}
