//! `rebound audit` against a real broker and a database written by the consumer's SQLite or
//! PostgreSQL sink: every acknowledged note version is counted as applied (or superseded),
//! dead-lettered or lost, `--extended` reads the sink's delivery journal, and a sink that keeps
//! nothing to read is refused before anything is read.

use std::process::{Command, Output};

use std::time::Duration;

use rebound_consumer::sink::{ApplyItem, PostgresSink, PostgresSinkSettings, Sink, SqliteSink};
use rebound_retry::{RecordHeaders, contract};
use rebound_schema::NoteCodec;
use rebound_sink_store::{PostgresSinkSpec, PostgresTlsArgs};
use rebound_testkit::{broker, create_test_topics, note, produce_raw, unique_prefix};

/// Runs `rebound audit ARGS` against the test broker.
fn rebound_audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rebound"))
        .arg("audit")
        .args(args)
        .env("REBOUND_BROKERS", broker())
        .output()
        .expect("rebound runs")
}

fn item(note_id: &str, version: i64, previous_attempts: u32, last_tier: Option<&str>) -> ApplyItem {
    ApplyItem {
        note: note(note_id, version),
        previous_attempts,
        last_tier: last_tier.map(str::to_owned),
    }
}

/// The value of the report's row with that label.
fn row(table: &str, label: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(label)?;
        rest.starts_with("  ").then(|| rest.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_version_in_a_sqlite_sink_is_applied_dead_lettered_or_lost() {
    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let mut sink = SqliteSink::open(&database).expect("opens");
    sink.enable_delivery_journal().expect("journal");
    every_acknowledged_version_is_applied_dead_lettered_or_lost(
        Box::new(sink),
        format!("sqlite://{}", database.display()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_version_in_a_postgres_sink_is_applied_dead_lettered_or_lost() {
    let url = rebound_testkit::fresh_postgres_database("audit").await;
    let sink = PostgresSink::open(PostgresSinkSettings {
        spec: PostgresSinkSpec::parse(&url).expect("test url"),
        tls: PostgresTlsArgs::default(),
        pool_size: 1,
        timeout: Duration::from_secs(30),
        journal: true,
    })
    .await
    .expect("opens");
    every_acknowledged_version_is_applied_dead_lettered_or_lost(Box::new(sink), url).await;
}

/// The audit of what `sink` (reached at `sink_url`) was given, by either sink.
async fn every_acknowledged_version_is_applied_dead_lettered_or_lost(sink: Box<dyn Sink>, sink_url: String) {
    let prefix = unique_prefix("audit");
    create_test_topics(&prefix, &["notes", "dlq"], 1).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let tier = format!("{prefix}retry-5s");
    // a: only version 2 reaches the sink (version 1 is superseded); b: applied after a tier and
    // delivered twice; c: dead-lettered; d: lost.
    let results = sink
        .apply_batch(vec![
            item("a", 2, 0, None),
            item("b", 1, 1, Some(&tier)),
            item("b", 1, 1, Some(&tier)),
        ])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    drop(sink);
    let dlq = format!("{prefix}dlq");
    let mut headers = RecordHeaders::new();
    headers.set(contract::ERROR_KIND, "permanent");
    headers.set(contract::ATTEMPT, "1");
    let value = NoteCodec::embedded().encode(&note("c", 1)).expect("encodes");
    produce_raw(&dlq, Some(b"c"), Some(&value), headers).await;
    produce_raw(&dlq, Some(b"poison"), Some(b"not a note"), RecordHeaders::new()).await;
    let ids_log = directory.path().join("ids.log");
    std::fs::write(&ids_log, "a\t1\na\t2\nb\t1\nc\t1\nd\t1\n").expect("writes the ids log");

    let output = rebound_audit(&[
        "--sink",
        &sink_url,
        "--ids-log",
        &ids_log.display().to_string(),
        "--topic-prefix",
        &prefix,
        "--extended",
    ]);
    let table = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a lost version fails the audit: {errors}"
    );
    assert!(
        errors.contains("1 note versions are neither applied nor dead-lettered"),
        "{errors}"
    );
    for (label, value) in [
        ("note versions produced (acknowledged)", "5"),
        ("distinct notes", "4"),
        ("latest version applied on first try", "1"),
        ("latest version applied after retry-5s", "1"),
        ("versions applied or superseded", "3"),
        ("versions in dlq (permanent)", "1"),
        ("undecodable records in dlq", "1"),
        ("lost", "1"),
        ("dlq records", "1"),
        ("sink deliveries", "3"),
        ("sink redelivered versions", "1"),
        ("sink extra deliveries", "1"),
        ("sink max deliveries of one version", "2"),
        ("versions never delivered (only superseded)", "1"),
        ("retries republished", "0"),
    ] {
        assert_eq!(row(&table, label).as_deref(), Some(value), "{label}:\n{table}");
    }
}

#[test]
fn only_a_database_sink_can_be_audited() {
    for (sink, expected) in [
        (
            "http://127.0.0.1:9/notes",
            "the audit reads a sqlite:// or postgres:// sink",
        ),
        ("postgres://db", "missing database name"),
        ("mysql://db", "expected sqlite://PATH"),
    ] {
        let output = rebound_audit(&["--sink", sink, "--ids-log", "/nonexistent/ids.log"]);
        let errors = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{sink}: {errors}");
        assert!(errors.contains(expected), "{sink}: {errors}");
    }
}

/// A tier copy of `note_id` version 1, due `due_in_ms` from now (negative: in the past).
async fn tier_copy(topic: &str, note_id: &str, attempt: u32, due_in_ms: i64) {
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits");
    let mut headers = RecordHeaders::new();
    headers.set(contract::ERROR_KIND, "transient");
    headers.set(contract::ATTEMPT, attempt.to_string());
    headers.set(contract::DUE_TIMESTAMP, (now_ms + due_in_ms).to_string());
    let value = NoteCodec::embedded().encode(&note(note_id, 1)).expect("encodes");
    produce_raw(topic, Some(note_id.as_bytes()), Some(&value), headers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_can_still_come_back_from_a_tier_is_waiting_not_lost() {
    let prefix = unique_prefix("audit-wait");
    create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m", "dlq"], 1).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let sink = SqliteSink::open(&database).expect("opens");
    let results = sink.apply_batch(vec![item("applied", 1, 0, None)]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    drop(sink);
    // waiting: went through retry-5s, now in retry-1m and due in a minute. gone: its only copy
    // was due five minutes ago, far past the grace, and it is nowhere else.
    tier_copy(&format!("{prefix}retry-5s"), "waiting", 1, -55_000).await;
    tier_copy(&format!("{prefix}retry-1m"), "waiting", 2, 60_000).await;
    tier_copy(&format!("{prefix}retry-5s"), "gone", 1, -300_000).await;
    let ids_log = directory.path().join("ids.log");
    std::fs::write(&ids_log, "applied\t1\nwaiting\t1\ngone\t1\n").expect("writes the ids log");
    let sink_url = format!("sqlite://{}", database.display());
    let ids = ids_log.display().to_string();
    let flags = ["--sink", &sink_url, "--ids-log", &ids, "--topic-prefix", &prefix];

    let json = rebound_audit(&[&flags[..], &["--output", "json"]].concat());
    assert_eq!(json.status.code(), Some(1), "{}", String::from_utf8_lossy(&json.stderr));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    assert_eq!(report["produced_versions"], 3, "{report}");
    assert_eq!(report["applied_or_superseded"], 1, "{report}");
    assert_eq!(report["waiting_in_tiers"]["retry-1m"]["versions"], 1, "{report}");
    assert!(report["waiting_in_tiers"].get("retry-5s").is_none(), "{report}");
    assert_eq!(report["lost"], 1, "{report}");
    assert_eq!(report["lost_examples"][0]["note_id"], "gone", "{report}");
    assert_eq!(report["settled"], false, "{report}");

    let table = rebound_audit(&flags);
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(
        row(&text, "versions waiting in retry-1m").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(row(&text, "lost").as_deref(), Some("1"), "{text}");

    // Mid-run, the progress line says what waits and when it is due, and never `lost`.
    let progress = rebound_audit(&[&flags[..], &["--output", "progress"]].concat());
    let line = String::from_utf8_lossy(&progress.stdout);
    assert_eq!(progress.status.code(), Some(1), "not settled: {line}");
    assert!(
        line.starts_with("applied 1/3 | dead-lettered 0 | in flight 1 | 1 note waits in retry-1m, due in "),
        "{line}"
    );
    assert!(!line.contains("lost"), "{line}");
}
