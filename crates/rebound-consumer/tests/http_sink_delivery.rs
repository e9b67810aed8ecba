//! The webhook sink against a real broker and real HTTP servers on loopback: a note counts as
//! applied only when the receiver took its body, versions of one note are delivered in order,
//! and a receiver that never answers cannot get the consumer evicted from its group.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use common::start_consumer;
use rebound_kafka::{fetch_committed_offsets, fetch_topic_watermarks};
use rebound_retry::contract;
use rebound_testkit::{create_test_topics, kafka_args, note, produce_notes, read_all, unique_prefix, wait_for};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];

/// Serves `app` on a loopback port and returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// The notes a receiver applied, as (note id, version), in the order it applied them.
type AppliedLog = Arc<Mutex<Vec<(String, i64)>>>;

/// What the redirecting receiver saw.
#[derive(Default)]
struct RedirectLog {
    posts: usize,
    gets_of_landing_page: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_redirects_posts_to_a_get_page_dead_letters_every_note_as_permanent() {
    let prefix = unique_prefix("redirect");
    create_test_topics(&prefix, &TOPICS, 2).await;
    // POST /notes answers 302 to /landing, which answers GET with 200: an HTTP client that
    // follows the redirect turns the POST into a body-less GET and sees 200.
    let log = Arc::new(Mutex::new(RedirectLog::default()));
    let app = axum::Router::new()
        .route(
            "/notes",
            post(|State(log): State<Arc<Mutex<RedirectLog>>>| async move {
                log.lock().expect("lock").posts += 1;
                (StatusCode::FOUND, [(header::LOCATION, "/landing")])
            }),
        )
        .route(
            "/landing",
            get(|State(log): State<Arc<Mutex<RedirectLog>>>| async move {
                log.lock().expect("lock").gets_of_landing_page += 1;
                StatusCode::OK
            }),
        )
        .with_state(Arc::clone(&log));
    let base = serve(app).await;
    let notes: Vec<_> = (0..20).map(|index| note(&format!("note-{index}"), 1)).collect();
    produce_notes(&format!("{prefix}notes"), &notes).await;
    let sink = format!("{base}/notes");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink]);

    let dead_letters = wait_for("20 dead letters", Duration::from_secs(60), || async {
        let records = read_all(&format!("{prefix}dlq")).await;
        (records.len() >= 20).then_some(records)
    })
    .await;
    consumer.stop().await;

    assert_eq!(dead_letters.len(), 20);
    for letter in &dead_letters {
        assert_eq!(letter.headers.get_str(contract::ERROR_KIND), Some("permanent"));
        let message = letter.headers.get_str(contract::ERROR_MESSAGE).unwrap_or_default();
        assert!(
            message.contains("302") && message.contains("/landing"),
            "the message names the status and the Location: {message}"
        );
    }
    let (posts, gets_of_landing_page) = {
        let log = log.lock().expect("lock");
        (log.posts, log.gets_of_landing_page)
    };
    assert_eq!(posts, 20);
    assert_eq!(gets_of_landing_page, 0, "the redirect was not followed");
    assert!(read_all(&format!("{prefix}retry-5s")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_origin_307_redirect_is_followed_with_its_method_and_body() {
    let prefix = unique_prefix("redirect-307");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/notes",
            post(|| async { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/notes-v2")]) }),
        )
        .route(
            "/notes-v2",
            post(
                |State(received): State<Arc<Mutex<Vec<String>>>>, body: String| async move {
                    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    received
                        .lock()
                        .expect("lock")
                        .push(json["note_id"].as_str().unwrap_or_default().to_owned());
                    StatusCode::OK
                },
            ),
        )
        .with_state(Arc::clone(&received));
    let base = serve(app).await;
    produce_notes(&format!("{prefix}notes"), &[note("moved", 1)]).await;
    let sink = format!("{base}/notes");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink]);
    wait_for(
        "the note posted to the new location",
        Duration::from_secs(60),
        || async { (received.lock().expect("lock").as_slice() == ["moved"]).then_some(()) },
    )
    .await;
    consumer.stop().await;
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
}

/// Applies notes in the order their requests finish, taking longer for lower versions, so a
/// client that sends two versions of one note at once sees them applied out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_of_one_note_reach_the_webhook_in_version_order() {
    let prefix = unique_prefix("http-order");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let applied: AppliedLog = Arc::default();
    let app = axum::Router::new()
        .route(
            "/notes",
            post(|State(applied): State<AppliedLog>, body: String| async move {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let version = json["version"].as_i64().unwrap_or(0);
                // Version 1 takes 300 ms to apply, version 3 none.
                tokio::time::sleep(Duration::from_millis(u64::try_from(3 - version).unwrap_or(0) * 150)).await;
                applied
                    .lock()
                    .expect("lock")
                    .push((json["note_id"].as_str().unwrap_or_default().to_owned(), version));
                StatusCode::OK
            }),
        )
        .with_state(Arc::clone(&applied));
    let base = serve(app).await;
    let mut notes = Vec::new();
    for version in 1..=3 {
        for id in ["a", "b", "c", "d"] {
            notes.push(note(id, version));
        }
    }
    produce_notes(&format!("{prefix}notes"), &notes).await;
    let sink = format!("{base}/notes");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink]);
    let applied = wait_for("12 versions applied", Duration::from_secs(60), || async {
        let applied = applied.lock().expect("lock").clone();
        (applied.len() >= 12).then_some(applied)
    })
    .await;
    consumer.stop().await;

    for id in ["a", "b", "c", "d"] {
        let versions: Vec<i64> = applied
            .iter()
            .filter(|(note_id, _)| note_id == id)
            .map(|(_, version)| *version)
            .collect();
        assert_eq!(versions, vec![1, 2, 3], "note {id} applied as {versions:?}");
    }
}

/// A receiver that accepts connections and never answers: with the default 10 s request timeout
/// a batch of 48 notes at 16 requests at a time took 30 s, three times the 10 s poll interval
/// this test sets, so the member was evicted and its work repeated by the next owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_answers_hands_its_batch_to_the_tiers_within_the_poll_interval() {
    let prefix = unique_prefix("hanging-sink");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held_connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held_connections.push(connection);
        }
    });
    let notes: Vec<_> = (0..48).map(|index| note(&format!("note-{index}"), 1)).collect();
    let source = format!("{prefix}notes");
    produce_notes(&source, &notes).await;
    let sink = format!("http://{address}/notes");
    let group = format!("{prefix}group");
    let consumer = start_consumer(&[
        "--topic-prefix",
        &prefix,
        "--sink",
        &sink,
        "--group",
        &group,
        "-X",
        "max.poll.interval.ms=10000",
        "-X",
        "session.timeout.ms=6000",
        // A sink that never answers would open the circuit breaker and hold the batch; this
        // test is about the batch deadline handing it to the tiers in time.
        "--breaker",
        "off",
    ]);

    // Every note is handed to the first tier as transient and the source offsets are committed
    // to the end: the batch finished within the member's poll interval.
    let watermarks = fetch_topic_watermarks(&kafka_args(), &source, Duration::from_secs(10))
        .await
        .expect("watermarks");
    let end = watermarks
        .partitions
        .get(&0)
        .map(|(_, high)| *high)
        .expect("partition 0");
    wait_for(
        "source offsets committed to the end",
        Duration::from_secs(60),
        || async {
            let committed = fetch_committed_offsets(&kafka_args(), &group, &source, Duration::from_secs(10))
                .await
                .ok()?;
            (committed.get(&0) == Some(&end)).then_some(())
        },
    )
    .await;
    consumer.stop().await;

    let tier_records = read_all(&format!("{prefix}retry-5s")).await;
    let offsets: BTreeSet<String> = tier_records
        .iter()
        .filter_map(|record| record.headers.get_str(contract::ORIGINAL_OFFSET).map(str::to_owned))
        .collect();
    assert_eq!(tier_records.len(), 48, "each note handed on once, not repeated");
    assert_eq!(offsets.len(), 48);
    for record in &tier_records {
        assert_eq!(record.headers.get_str(contract::ERROR_KIND), Some("transient"));
    }
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
}
