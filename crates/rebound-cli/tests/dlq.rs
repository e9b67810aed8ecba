//! `rebound dlq` against a real broker. Each test drives notes and poison through the real
//! consumer (in-process, with a scripted HTTP sink answering 422 or 400 for some notes) until the
//! DLQ holds them, then runs the `rebound` binary: stats count by kind and fingerprint, inspect
//! filters select exactly the expected dead letters, a dry run sends nothing, a replay after the
//! fix brings every permanent failure into the sink and leaves poison in place, a replay killed
//! with SIGKILL (or stopped with SIGTERM, or overtaken by a second replay) and run again sends
//! each dead letter exactly once, and the replay-count limit stops a record that keeps failing.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use clap::Parser as _;
use rebound_consumer::ConsumerArgs;
use rebound_kafka::{ConsumedRecord, fetch_dlq_backlog, read_replay_ledger, topic_exists};
use rebound_retry::{RecordHeaders, contract, error_fingerprint};
use rebound_schema::NoteCodec;
use rebound_testkit::{
    RunningService, ScriptedHttpSink, broker, create_test_topics, kafka_args, note, produce_raw, read_all,
    unique_prefix, wait_for, wait_for_records,
};
use serde_json::Value;

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];
const UNPROCESSABLE: &str = "http sink answered 422 Unprocessable Entity";
const BAD_REQUEST: &str = "http sink answered 400 Bad Request";

/// The sink's verdict before the fix: every fourth note is unprocessable (422), the next one a
/// bad request (400), both permanent failures; the rest are applied.
fn status_before_fix(note_id: &str) -> u16 {
    let index: usize = note_id.trim_start_matches("note-").parse().unwrap_or(2);
    match index % 4 {
        0 => 422,
        1 => 400,
        _ => 200,
    }
}

/// A consumer running in this process.
struct RunningConsumer(RunningService);

impl RunningConsumer {
    fn start(prefix: &str, group: &str, sink_url: &str) -> Self {
        let broker = broker();
        let config = ConsumerArgs::parse_from([
            "rebound-consumer",
            "--brokers",
            &broker,
            "--topic-prefix",
            prefix,
            "--group",
            group,
            "--sink",
            sink_url,
            "--batch-linger",
            "5ms",
            "--tier",
            "retry-5s:1s",
            "--tier",
            "retry-1m:2s",
        ])
        .into_config()
        .expect("valid consumer flags");
        Self(RunningService::spawn("consumer", |shutdown| {
            rebound_consumer::run(config, shutdown)
        }))
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

/// A DLQ filled through the real pipeline.
struct FilledDlq {
    prefix: String,
    group: String,
    /// Note ids the sink answered 422.
    unprocessable: BTreeSet<String>,
    /// Note ids the sink answered 400.
    bad_requests: BTreeSet<String>,
    /// Keys of the poison records.
    poison: BTreeSet<String>,
    /// The DLQ's records.
    dead_letters: Vec<ConsumedRecord>,
}

impl FilledDlq {
    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn permanent(&self) -> BTreeSet<String> {
        self.unprocessable.union(&self.bad_requests).cloned().collect()
    }

    /// Runs `rebound dlq ARGS --topic-prefix PREFIX`.
    fn rebound_dlq(&self, args: &[&str]) -> Output {
        let mut argv = vec!["dlq"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--topic-prefix", &self.prefix]);
        rebound(&argv)
    }
}

/// Produces `notes` notes (each with a `traceparent` header) and `poison` undecodable records
/// to the source topic, runs the consumer against a sink scripted by [`status_before_fix`],
/// and waits until every failure is in the DLQ. Returns the consumer still running, with the
/// sink of before the fix.
async fn fill_dlq(test_name: &str, notes: usize, poison: usize) -> (FilledDlq, RunningConsumer) {
    let prefix = unique_prefix(test_name);
    create_test_topics(&prefix, &TOPICS[..3], 3).await;
    create_test_topics(&prefix, &TOPICS[3..], 2).await;
    let source = format!("{prefix}notes");
    let codec = NoteCodec::embedded();
    let (mut unprocessable, mut bad_requests, mut poison_keys) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for index in 0..notes {
        let note_id = format!("note-{index:03}");
        let mut headers = RecordHeaders::new();
        headers.push(
            "traceparent",
            Some(format!("00-{index:032x}-00f067aa0ba902b7-01").into_bytes()),
        );
        let value = codec.encode(&note(&note_id, 1)).expect("encodes");
        produce_raw(&source, Some(note_id.as_bytes()), Some(&value), headers).await;
        match status_before_fix(&note_id) {
            422 => unprocessable.insert(note_id),
            400 => bad_requests.insert(note_id),
            _ => false,
        };
    }
    for index in 0..poison {
        let key = format!("poison-{index:03}");
        // Two kinds of poison, two fingerprints: no single-object marker at all, and a marker
        // followed by a schema fingerprint no version of the schema has.
        let value = if index % 2 == 0 {
            format!("garbage bytes {index}").into_bytes()
        } else {
            let mut bytes = vec![0xC3, 0x01, 0x10, 0x20, u8::try_from(index).unwrap_or(0), 0x30];
            bytes.extend_from_slice(&[0x40, 0x50, 0x60, 0x70, 0x01, 0x02]);
            bytes
        };
        produce_raw(&source, Some(key.as_bytes()), Some(&value), RecordHeaders::new()).await;
        poison_keys.insert(key);
    }
    let sink = ScriptedHttpSink::start(|note_id, _| status_before_fix(note_id)).await;
    let group = format!("{prefix}consumer");
    let consumer = RunningConsumer::start(&prefix, &group, &sink.url());
    let expected = unprocessable.len() + bad_requests.len() + poison_keys.len();
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), expected, Duration::from_secs(60)).await;
    assert_eq!(dead_letters.len(), expected, "each failure dead-lettered once");
    let filled = FilledDlq {
        prefix,
        group,
        unprocessable,
        bad_requests,
        poison: poison_keys,
        dead_letters,
    };
    (filled, consumer)
}

fn rebound(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(args)
        .env("REBOUND_BROKERS", broker())
        .env("REBOUND_TIMEOUT", "20s")
        .output()
        .expect("rebound runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
}

/// The JSON lines of an output.
fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

/// The keys of `inspect --output json` lines.
fn inspected_keys(filled: &FilledDlq, filters: &[&str]) -> BTreeSet<String> {
    let mut args = vec!["inspect", "--output", "json"];
    args.extend_from_slice(filters);
    let output = filled.rebound_dlq(&args);
    assert_success(&output);
    json_lines(&output)
        .iter()
        .map(|line| line["key"].as_str().expect("key").to_owned())
        .collect()
}

fn key_of(record: &ConsumedRecord) -> String {
    String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned()
}

fn format_time(epoch_ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(epoch_ms).expect("positive"));
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_dead_letters_by_original_topic_kind_and_fingerprint() {
    let (filled, consumer) = fill_dlq("dlq-stats", 240, 30).await;
    consumer.stop().await;

    let output = filled.rebound_dlq(&["stats", "--output", "json"]);
    assert_success(&output);
    let stats: Value = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    assert_eq!(stats["depth"], 150);
    assert_eq!(stats["records_in_topic"], 150);
    assert_eq!(stats["not_replayed"], 150);
    let source = filled.topic("notes");
    assert_eq!(stats["by_original_topic"], serde_json::json!({ source.clone(): 150 }));
    assert_eq!(stats["by_kind"], serde_json::json!({ "permanent": 120, "poison": 30 }));
    let oldest = stats["oldest_timestamp_ms"].as_i64().expect("oldest");
    let newest = stats["newest_timestamp_ms"].as_i64().expect("newest");
    assert!(oldest <= newest);
    assert!(stats["oldest_age_ms"].as_i64().expect("age") >= stats["newest_age_ms"].as_i64().expect("age"));

    let groups: BTreeMap<(String, String, String), u64> = stats["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| {
            (
                (
                    group["original_topic"].as_str().expect("topic").to_owned(),
                    group["kind"].as_str().expect("kind").to_owned(),
                    group["fingerprint"].as_str().expect("fingerprint").to_owned(),
                ),
                group["count"].as_u64().expect("count"),
            )
        })
        .collect();
    let marker = error_fingerprint(
        "failed to decode record: expected single-object marker c3 01 or confluent magic byte 00, found 67 61",
    );
    let unknown_schema =
        error_fingerprint("failed to decode record: unknown writer schema fingerprint 1020003040506070");
    let expected: BTreeMap<(String, String, String), u64> = [
        ("permanent", error_fingerprint(UNPROCESSABLE).id, 60),
        ("permanent", error_fingerprint(BAD_REQUEST).id, 60),
        ("poison", marker.id.clone(), 15),
        ("poison", unknown_schema.id.clone(), 15),
    ]
    .into_iter()
    .map(|(kind, id, count)| ((source.clone(), kind.to_owned(), id), count))
    .collect();
    assert_eq!(groups, expected, "masked: {marker:?} {unknown_schema:?}");

    let table = filled.rebound_dlq(&["stats"]);
    assert_success(&table);
    let text = stdout(&table);
    assert!(text.contains("depth (selected)     150"), "{text}");
    assert!(text.contains("http sink answered <n> Unprocessable Entity"), "{text}");
    assert!(text.contains(&error_fingerprint(BAD_REQUEST).id), "{text}");

    let filtered = filled.rebound_dlq(&["stats", "--kind", "poison", "--output", "json"]);
    assert_success(&filtered);
    let filtered: Value = serde_json::from_str(stdout(&filtered).trim()).expect("JSON");
    assert_eq!(filtered["depth"], 30);
    assert_eq!(filtered["records_in_topic"], 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_filters_select_exactly_the_expected_dead_letters() {
    let (mut filled, consumer) = fill_dlq("dlq-inspect", 120, 10).await;
    // A later wave, dead-lettered after the first one was seen in the DLQ: a time range must
    // tell them apart.
    let late: BTreeSet<String> = (0..4).map(|index| format!("late-{index}")).collect();
    for key in &late {
        produce_raw(
            &filled.topic("notes"),
            Some(key.as_bytes()),
            Some(b"late garbage bytes"),
            RecordHeaders::new(),
        )
        .await;
    }
    filled.dead_letters = wait_for_records(&filled.topic("dlq"), 74, Duration::from_secs(30)).await;
    filled.poison.extend(late.iter().cloned());
    consumer.stop().await;
    let all: BTreeSet<String> = filled.dead_letters.iter().map(key_of).collect();
    assert_eq!(all.len(), 74);

    assert_eq!(inspected_keys(&filled, &[]), all);
    assert_eq!(inspected_keys(&filled, &["--kind", "poison"]), filled.poison);
    assert_eq!(inspected_keys(&filled, &["--kind", "permanent"]), filled.permanent());
    assert_eq!(
        inspected_keys(&filled, &["--kind", "permanent,poison"]),
        all,
        "repeated values widen"
    );
    assert_eq!(
        inspected_keys(&filled, &["--grep", "answered 422"]),
        filled.unprocessable
    );
    assert_eq!(
        inspected_keys(&filled, &["--kind", "permanent", "--grep", "(?i)BAD REQUEST"]),
        filled.bad_requests
    );
    assert_eq!(
        inspected_keys(&filled, &["--fingerprint", &error_fingerprint(BAD_REQUEST).id]),
        filled.bad_requests
    );
    assert_eq!(
        inspected_keys(
            &filled,
            &["--key", "note-004", "--key", "poison-003", "--key", "note-002"]
        ),
        BTreeSet::from(["note-004".to_owned(), "poison-003".to_owned()]),
        "note-002 was applied, not dead-lettered"
    );
    assert_eq!(
        inspected_keys(&filled, &["--original-topic", "notes"]),
        all,
        "prefix applied"
    );
    assert!(inspected_keys(&filled, &["--original-topic", "elsewhere"]).is_empty());
    assert_eq!(inspected_keys(&filled, &["--since", "1h"]), all);
    assert!(inspected_keys(&filled, &["--until", "1h"]).is_empty());

    // A time range splits the DLQ at the late wave's first dead letter: at or after, and before.
    let timestamp = |record: &ConsumedRecord| record.timestamp_ms.expect("timestamp");
    let split = filled
        .dead_letters
        .iter()
        .filter(|record| late.contains(&key_of(record)))
        .map(timestamp)
        .min()
        .expect("late wave");
    let at_or_after: BTreeSet<String> = filled
        .dead_letters
        .iter()
        .filter(|record| timestamp(record) >= split)
        .map(key_of)
        .collect();
    assert_eq!(at_or_after, late, "the late wave came strictly after the first");
    assert_eq!(inspected_keys(&filled, &["--since", &format_time(split)]), late);
    assert_eq!(
        inspected_keys(&filled, &["--until", &format_time(split)]),
        all.difference(&late).cloned().collect()
    );
    // The same instant an hour after the split, written with a +01:00 offset.
    let hour_later = format_time(split + 2 * 3_600_000).replace('Z', "+01:00");
    assert_eq!(
        inspected_keys(
            &filled,
            &[
                "--kind",
                "poison",
                "--since",
                &format_time(split),
                "--until",
                &hour_later
            ]
        ),
        late
    );

    let limited = filled.rebound_dlq(&["inspect", "--output", "json", "--kind", "permanent", "--limit", "7"]);
    assert_success(&limited);
    assert_eq!(json_lines(&limited).len(), 7);

    // Everything about one dead letter: headers, the decoded note, the failure story.
    let output = filled.rebound_dlq(&["inspect", "--output", "json", "--key", "note-004"]);
    assert_success(&output);
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    let letter = &lines[0];
    assert_eq!(letter["kind"], "permanent");
    assert_eq!(letter["error_message"], UNPROCESSABLE);
    assert_eq!(letter["note"]["note_id"], "note-004");
    assert_eq!(letter["original_topic"], filled.topic("notes"));
    assert_eq!(letter["attempt"], 1);
    assert_eq!(letter["replayed"], false);
    let header_keys: Vec<&str> = letter["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|header| header["key"].as_str().expect("key"))
        .collect();
    assert!(header_keys.contains(&"traceparent"), "{header_keys:?}");
    assert!(header_keys.contains(&contract::DLQ_ERRORS_GROUP), "{header_keys:?}");
    // Poison is shown in hex, byte for byte.
    let output = filled.rebound_dlq(&["inspect", "--output", "json", "--key", "poison-000"]);
    let poison = &json_lines(&output)[0];
    assert!(poison["note"].is_null());
    assert_eq!(poison["value_hex"], hex::encode(b"garbage bytes 0"));
    assert!(
        poison["decode_error"]
            .as_str()
            .expect("error")
            .contains("single-object marker")
    );

    let text = filled.rebound_dlq(&["inspect", "--key", "note-004"]);
    assert_success(&text);
    let text = stdout(&text);
    assert!(text.contains("key=note-004") && text.contains(UNPROCESSABLE), "{text}");
    assert!(text.contains("1 dead letters listed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dry_run_lists_what_it_would_send_and_sends_nothing() {
    let (filled, consumer) = fill_dlq("dlq-dry-run", 40, 4).await;
    consumer.stop().await;
    let source_before = read_all(&filled.topic("notes")).await.len();

    let output = filled.rebound_dlq(&["replay", "--kind", "permanent", "--dry-run"]);
    assert_success(&output);
    let text = stdout(&output);
    assert_eq!(
        text.lines().filter(|line| line.starts_with("would replay ")).count(),
        20,
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "would replay 20 dead letters ({}: 20); nothing was sent",
            filled.topic("notes")
        )),
        "{text}"
    );
    let json = filled.rebound_dlq(&["replay", "--dry-run", "--output", "json"]);
    assert_success(&json);
    let lines = json_lines(&json);
    assert_eq!(
        lines.iter().filter(|line| line["event"] == "would_replay").count(),
        24,
        "poison is replayable too when selected"
    );
    assert_eq!(lines.last().expect("summary")["event"], "summary");

    assert_eq!(
        read_all(&filled.topic("notes")).await.len(),
        source_before,
        "nothing sent"
    );
    assert_eq!(read_all(&filled.topic("dlq")).await.len(), 24);
    assert!(
        !topic_exists(&kafka_args(), &filled.topic("dlq.replayed"), Duration::from_secs(10))
            .await
            .expect("metadata"),
        "a dry run records nothing, not even a ledger topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_the_fix_applies_every_permanent_failure_and_leaves_poison_in_place() {
    let (filled, consumer) = fill_dlq("dlq-replay-fixed", 120, 10).await;
    consumer.stop().await;
    let permanent = filled.permanent();
    // The fix: the sink now accepts every note. The consumer group continues where it stopped.
    let fixed_sink = ScriptedHttpSink::start(|_, _| 200).await;
    let fixed_consumer = RunningConsumer::start(&filled.prefix, &filled.group, &fixed_sink.url());

    let output = filled.rebound_dlq(&["replay", "--kind", "permanent"]);
    assert_success(&output);
    assert!(
        stdout(&output).contains(&format!("replayed 60 dead letters ({}: 60)", filled.topic("notes"))),
        "{}",
        stdout(&output)
    );
    let applied = wait_for(
        "every permanent failure applied after the fix",
        Duration::from_secs(30),
        || async {
            let applied: BTreeSet<String> = fixed_sink
                .requests()
                .into_iter()
                .filter(|request| request.status == 200)
                .map(|request| request.note_id)
                .collect();
            (applied.len() >= permanent.len()).then_some(applied)
        },
    )
    .await;
    fixed_consumer.stop().await;
    assert_eq!(applied, permanent, "exactly the permanent failures came back");
    assert_eq!(fixed_sink.requests().len(), 60, "each exactly once");

    // The copies keep key, value and user headers, carry a fresh history and count the replay.
    let source = read_all(&filled.topic("notes")).await;
    let copies: Vec<&ConsumedRecord> = source
        .iter()
        .filter(|record| record.headers.get(contract::REPLAY_COUNT).is_some())
        .collect();
    assert_eq!(copies.len(), 60);
    for copy in &copies {
        let original = filled
            .dead_letters
            .iter()
            .find(|letter| letter.key == copy.key)
            .expect("copy of a dead letter");
        assert_eq!(copy.value, original.value, "value byte for byte");
        assert_eq!(copy.headers.get_str(contract::REPLAY_COUNT), Some("1"));
        assert_eq!(
            copy.headers.get_str("traceparent"),
            original.headers.get_str("traceparent")
        );
        for key in contract::FAILURE_HISTORY_KEYS.iter().chain(contract::DLQ_KEYS.iter()) {
            assert!(copy.headers.get(key).is_none(), "{key} cleared");
        }
    }

    // Poison stays in the DLQ, still waiting; nothing new was dead-lettered.
    let dead_letters = read_all(&filled.topic("dlq")).await;
    assert_eq!(dead_letters.len(), 70);
    let stats = filled.rebound_dlq(&["stats", "--output", "json"]);
    assert_success(&stats);
    let stats: Value = serde_json::from_str(stdout(&stats).trim()).expect("JSON");
    assert_eq!(stats["depth"], 70);
    assert_eq!(stats["not_replayed"], 10);
    let backlog = fetch_dlq_backlog(
        &kafka_args(),
        &filled.topic("dlq"),
        &filled.topic("dlq.replayed"),
        Duration::from_secs(20),
    )
    .await
    .expect("backlog");
    assert_eq!((backlog.records, backlog.not_replayed), (70, 10));
    let oldest_poison = dead_letters
        .iter()
        .filter(|record| filled.poison.contains(&key_of(record)))
        .filter_map(|record| record.timestamp_ms)
        .min();
    assert_eq!(backlog.oldest_not_replayed_timestamp_ms, oldest_poison);
    assert_eq!(
        inspected_keys(&filled, &["--kind", "permanent"]).len(),
        60,
        "replayed dead letters are still inspectable"
    );

    // Running the same replay again sends nothing: the ledger remembers.
    let again = filled.rebound_dlq(&["replay", "--kind", "permanent"]);
    assert_success(&again);
    let text = stdout(&again);
    assert!(text.contains("replayed 0 dead letters"), "{text}");
    assert!(
        text.contains("already replayed by an earlier run (skipped): 60"),
        "{text}"
    );
    assert_eq!(read_all(&filled.topic("notes")).await.len(), source.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_killed_midway_and_run_again_sends_each_dead_letter_exactly_once() {
    let (filled, consumer) = fill_dlq("dlq-replay-kill", 200, 0).await;
    consumer.stop().await;
    assert_eq!(filled.dead_letters.len(), 100);
    create_test_topics(&filled.prefix, &["redriven"], 3).await;
    let target = filled.topic("redriven");

    let mut replay = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args([
            "dlq",
            "replay",
            "--topic-prefix",
            &filled.prefix,
            "--to",
            "redriven",
            "--rate",
            "20/s",
        ])
        .env("REBOUND_BROKERS", broker())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rebound starts");
    wait_for("20 replayed copies", Duration::from_secs(30), || async {
        (read_all(&target).await.len() >= 20).then_some(())
    })
    .await;
    replay.kill().expect("SIGKILL");
    replay.wait().expect("reaped");
    let before_rerun = read_all(&target).await.len();
    assert!(before_rerun < 100, "killed midway, after {before_rerun} copies");

    let rerun = filled.rebound_dlq(&["replay", "--to", "redriven"]);
    assert_success(&rerun);
    let text = stdout(&rerun);
    assert!(
        text.contains(&format!("replayed {} dead letters", 100 - before_rerun)),
        "{text}"
    );

    let copies = read_all(&target).await;
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for copy in &copies {
        *per_key.entry(key_of(copy)).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = filled.dead_letters.iter().map(|letter| (key_of(letter), 1)).collect();
    assert_eq!(per_key, expected, "every dead letter exactly once in total");
    let ledger = read_replay_ledger(
        &kafka_args(),
        &filled.topic("dlq.replayed"),
        &filled.topic("dlq"),
        Duration::from_secs(20),
    )
    .await
    .expect("ledger");
    assert_eq!(ledger.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_stopped_by_sigterm_commits_what_it_reports_and_resumes() {
    let (filled, consumer) = fill_dlq("dlq-replay-sigterm", 40, 0).await;
    consumer.stop().await;
    create_test_topics(&filled.prefix, &["redriven"], 1).await;
    let target = filled.topic("redriven");
    let replay = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args([
            "dlq",
            "replay",
            "--topic-prefix",
            &filled.prefix,
            "--to",
            "redriven",
            "--rate",
            "10/s",
        ])
        .env("REBOUND_BROKERS", broker())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rebound starts");
    wait_for("4 replayed copies", Duration::from_secs(30), || async {
        (read_all(&target).await.len() >= 4).then_some(())
    })
    .await;
    let terminated = Command::new("kill")
        .args(["-TERM", &replay.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(terminated.success());
    let stopped = tokio::task::spawn_blocking(move || replay.wait_with_output().expect("replay ends"))
        .await
        .expect("joined");
    assert_eq!(stopped.status.code(), Some(1), "{}", stderr(&stopped));
    let text = stdout(&stopped);
    assert!(text.contains("interrupted"), "{text}");
    let reported: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("replayed ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("a replayed count in {text}"));
    assert!(reported < 20, "stopped midway: {text}");
    assert_eq!(
        read_all(&target).await.len(),
        reported,
        "what it reports is committed, and nothing more"
    );

    let rerun = filled.rebound_dlq(&["replay", "--to", "redriven"]);
    assert_success(&rerun);
    let keys: Vec<String> = read_all(&target).await.iter().map(key_of).collect();
    let distinct: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), 20);
    assert_eq!(distinct, filled.permanent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replay_takes_over_from_a_running_one_without_sending_anything_twice() {
    let (filled, consumer) = fill_dlq("dlq-replay-takeover", 80, 0).await;
    consumer.stop().await;
    create_test_topics(&filled.prefix, &["redriven"], 3).await;
    let target = filled.topic("redriven");
    let slow = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args([
            "dlq",
            "replay",
            "--topic-prefix",
            &filled.prefix,
            "--to",
            "redriven",
            "--rate",
            "5/s",
        ])
        .env("REBOUND_BROKERS", broker())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rebound starts");
    wait_for("the slow replay under way", Duration::from_secs(30), || async {
        (!read_all(&target).await.is_empty()).then_some(())
    })
    .await;

    let fast = filled.rebound_dlq(&["replay", "--to", "redriven"]);
    assert_success(&fast);
    let slow = tokio::task::spawn_blocking(move || slow.wait_with_output().expect("slow replay ends"))
        .await
        .expect("joined");
    assert_eq!(
        slow.status.code(),
        Some(1),
        "the first replay was fenced: {}",
        stderr(&slow)
    );
    assert!(stderr(&slow).contains("took over"), "{}", stderr(&slow));

    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for copy in read_all(&target).await {
        *per_key.entry(key_of(&copy)).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = filled.dead_letters.iter().map(|letter| (key_of(letter), 1)).collect();
    assert_eq!(per_key, expected, "every dead letter exactly once across both replays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_count_limit_stops_a_record_that_keeps_failing() {
    // Four notes the sink keeps rejecting, whatever happens: replayed, they fail and come back.
    let (filled, consumer) = fill_dlq("dlq-replay-limit", 6, 0).await;
    assert_eq!(filled.dead_letters.len(), 4);
    let dlq = filled.topic("dlq");
    for round in 1..=3 {
        let output = filled.rebound_dlq(&["replay", "--max-replays", "3"]);
        assert_success(&output);
        assert!(
            stdout(&output).contains("replayed 4 dead letters"),
            "{}",
            stdout(&output)
        );
        wait_for_records(&dlq, 4 * (round + 1), Duration::from_secs(30)).await;
    }
    let refused = filled.rebound_dlq(&["replay"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let text = stdout(&refused);
    assert_eq!(
        text.matches("replayed 3 times already (--max-replays 3)").count(),
        4,
        "{text}"
    );
    assert!(text.contains("replayed 0 dead letters"), "{text}");
    assert!(
        stderr(&refused).contains("4 selected dead letters were not replayed"),
        "{}",
        stderr(&refused)
    );
    consumer.stop().await;

    let mut replay_counts: BTreeMap<String, usize> = BTreeMap::new();
    for letter in read_all(&dlq).await {
        let count = letter.headers.get_str(contract::REPLAY_COUNT).unwrap_or("0").to_owned();
        *replay_counts.entry(count).or_default() += 1;
    }
    assert_eq!(
        replay_counts,
        BTreeMap::from([
            ("0".to_owned(), 4),
            ("1".to_owned(), 4),
            ("2".to_owned(), 4),
            ("3".to_owned(), 4)
        ]),
        "each replay came back with its count, and the fourth was refused"
    );
}

#[test]
fn bad_filter_syntax_is_a_usage_error_naming_the_flag() {
    let cases: [(&[&str], &str); 7] = [
        (&["inspect", "--since", "yesterday"], "--since"),
        (&["inspect", "--until", "2025-13-01T00:00:00Z"], "--until"),
        (&["stats", "--kind", "fatal"], "--kind"),
        (&["replay", "--grep", "(unclosed"], "--grep"),
        (&["replay", "--rate", "fast"], "--rate"),
        (&["inspect", "--fingerprint", "nope"], "--fingerprint"),
        (&["inspect", "--since", "1h", "--until", "2h"], "--since/--until"),
    ];
    for (args, flag) in cases {
        let mut argv = vec!["dlq"];
        argv.extend_from_slice(args);
        // No broker is contacted: bad flags are reported before any work starts.
        argv.extend_from_slice(&["--brokers", "127.0.0.1:1"]);
        let output = Command::new(env!("CARGO_BIN_EXE_rebound"))
            .args(&argv)
            .output()
            .expect("rebound runs");
        assert_eq!(output.status.code(), Some(2), "{argv:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(flag), "{argv:?}: {}", stderr(&output));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_and_an_unreachable_broker_fail_clearly_with_exit_code_1() {
    let prefix = unique_prefix("dlq-missing");
    let missing = rebound(&["dlq", "stats", "--topic-prefix", &prefix]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains(&format!("dead-letter topic {prefix}dlq does not exist")),
        "{}",
        stderr(&missing)
    );

    let unreachable = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(["dlq", "inspect", "--brokers", "127.0.0.1:1", "--timeout", "3s"])
        .output()
        .expect("rebound runs");
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).contains("cannot read dead-letter topic dlq on brokers 127.0.0.1:1"),
        "{}",
        stderr(&unreachable)
    );

    create_test_topics(&prefix, &["dlq"], 1).await;
    let mut headers = RecordHeaders::new();
    headers.set(contract::ORIGINAL_TOPIC, format!("{prefix}gone"));
    headers.set(contract::ERROR_KIND, "permanent");
    produce_raw(&format!("{prefix}dlq"), Some(b"k"), Some(b"v"), headers).await;
    let no_target = rebound(&["dlq", "replay", "--topic-prefix", &prefix, "--to", "nowhere"]);
    assert_eq!(no_target.status.code(), Some(1));
    assert!(
        stderr(&no_target).contains(&format!("target topic {prefix}nowhere does not exist")),
        "{}",
        stderr(&no_target)
    );
    let gone = rebound(&["dlq", "replay", "--topic-prefix", &prefix]);
    assert_eq!(gone.status.code(), Some(1), "{}", stdout(&gone));
    assert!(
        stdout(&gone).contains(&format!("target topic {prefix}gone does not exist")),
        "{}",
        stdout(&gone)
    );
    let to_dlq = rebound(&["dlq", "replay", "--topic-prefix", &prefix, "--to", "dlq"]);
    assert_eq!(to_dlq.status.code(), Some(2), "{}", stderr(&to_dlq));
}
