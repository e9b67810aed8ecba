//! The consumer against a real broker, fed records at the edges of what Kafka allows: values
//! close to or over the message size limit, huge and numerous headers, duplicated and non-UTF-8
//! contract headers, non-UTF-8 foreign headers. Whatever arrives, the consumer must route it by
//! the documented rules, never stall its partition and never lose the record's trace.

mod common;

use std::time::Duration;

use common::start_consumer;
use rebound_kafka::{
    ConsumedRecord, KafkaArgs, OutgoingRecord, ProducerSettings, RecordProducer, fetch_committed_offsets,
};
use rebound_retry::{RecordHeaders, contract};
use rebound_schema::NoteCodec;
use rebound_sink_store::read_all_notes;
use rebound_testkit::{
    ScriptedHttpSink, assert_history_headers_at_most_once, broker, create_test_topics, create_test_topics_with_config,
    foreign_headers, incompressible_bytes, kafka_args, note, produce_notes, produce_raw, read_all, record_keyed,
    required_header as header, unique_prefix, wait_for, wait_for_records,
};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];
const SHORT_TIERS: [&str; 4] = ["--tier", "retry-5s:1s", "--tier", "retry-1m:2s"];
/// librdkafka's default `message.max.bytes`: the largest record a default producer sends.
const CLIENT_MESSAGE_LIMIT: usize = 1_000_000;

fn header_bytes(record: &ConsumedRecord) -> usize {
    record
        .headers
        .iter()
        .map(|header| header.key.len() + header.value.as_ref().map_or(0, Vec::len))
        .sum()
}

/// Asserts the dead letter is the bounded stub of a record whose value had `value_len` bytes.
fn assert_is_stub(letter: &ConsumedRecord, value_len: usize, refused_by: &str) {
    assert_eq!(letter.value, None, "a stub carries no value");
    assert_eq!(header(letter, contract::DROPPED_VALUE_BYTES), value_len.to_string());
    assert_eq!(header(letter, contract::ERROR_KIND), "poison");
    let message = header(letter, contract::ERROR_MESSAGE);
    assert!(
        message.starts_with(&format!("copy refused as too large by {refused_by}")),
        "{message}"
    );
    assert!(
        header_bytes(letter) < 32 * 1024,
        "a stub is small: {} header bytes",
        header_bytes(letter)
    );
    assert_history_headers_at_most_once(letter, "the stub");
}

/// A sqlite sink in a temporary directory: the directory guard and the `--sink` value.
fn sqlite_sink() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let sink = format!("sqlite://{}", database.display());
    (directory, database, sink)
}

async fn wait_for_applied(database: &std::path::Path, note_id: &str) {
    wait_for(&format!("{note_id} applied"), Duration::from_secs(60), || async {
        read_all_notes(database)
            .ok()
            .filter(|rows| rows.iter().any(|row| row.note_id == note_id))
    })
    .await;
}

/// Asserts the group committed the whole (single-partition) topic: nothing is stuck.
async fn assert_committed_to(group: &str, topic: &str, end: i64) {
    let committed = fetch_committed_offsets(&kafka_args(), group, topic, Duration::from_secs(10))
        .await
        .expect("committed offsets");
    assert_eq!(committed.get(&0), Some(&end), "{topic} committed to its end");
}

/// The value the scheduler or a default producer can still send, minus `headroom` bytes.
fn poison_value(len: usize, seed: u64) -> Vec<u8> {
    let mut value = b"not avro ".to_vec();
    value.extend(incompressible_bytes(len - value.len(), seed));
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_value_at_the_client_message_limit_is_dead_lettered_as_a_stub_and_its_partition_moves_on() {
    let prefix = unique_prefix("oversized-poison");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    // Fits a default producer's limit on its own; its dead letter, with the history added, does not.
    let value_len = CLIENT_MESSAGE_LIMIT - 200;
    let value = poison_value(value_len, 1);
    produce_raw(&topic, Some(b"big"), Some(&value), RecordHeaders::new()).await;
    produce_notes(&topic, &[note("after-big", 1)]).await;

    let (_directory, database, sink) = sqlite_sink();
    let group = format!("{prefix}consumer");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink, "--group", &group]);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    wait_for_applied(&database, "after-big").await;
    consumer.stop().await;

    assert_eq!(dead_letters.len(), 1);
    let letter = &dead_letters[0];
    assert_eq!(
        letter.key.as_deref(),
        Some(b"big".as_slice()),
        "the stub keeps a small key"
    );
    assert_is_stub(letter, value_len, &format!("{prefix}dlq"));
    assert!(header(letter, contract::ERROR_MESSAGE).contains("single-object marker"));
    assert_eq!(header(letter, contract::ORIGINAL_TOPIC), topic);
    assert_eq!(header(letter, contract::ORIGINAL_OFFSET), "0");
    assert_eq!(header(letter, contract::DLQ_ERRORS_OFFSET), "0");
    assert_eq!(header(letter, contract::ATTEMPT), "1");
    // The original is still where the stub says.
    let source = read_all(&topic).await;
    assert_eq!(source[0].value.as_deref(), Some(value.as_slice()));
    assert!(read_all(&format!("{prefix}retry-5s")).await.is_empty());
    assert_committed_to(&group, &topic, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_refused_by_the_dlq_topic_size_limit_becomes_a_stub_and_small_ones_keep_their_bytes() {
    let prefix = unique_prefix("dlq-limit");
    create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m"], 1).await;
    create_test_topics_with_config(&prefix, &["dlq"], 1, &[("max.message.bytes", "65536")]).await;
    let topic = format!("{prefix}notes");
    let big = poison_value(200_000, 2);
    let small = poison_value(100, 3);
    // In one batch: Kafka refuses a whole record batch for one record that is too large, so the
    // small one may be refused alongside; it must still arrive whole.
    produce_raw(&topic, Some(b"big"), Some(&big), RecordHeaders::new()).await;
    produce_raw(&topic, Some(b"small"), Some(&small), RecordHeaders::new()).await;
    produce_notes(&topic, &[note("after", 1)]).await;

    let (_directory, database, sink) = sqlite_sink();
    let group = format!("{prefix}consumer");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink, "--group", &group]);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 2, Duration::from_secs(60)).await;
    wait_for_applied(&database, "after").await;
    consumer.stop().await;

    assert_eq!(dead_letters.len(), 2);
    assert_is_stub(record_keyed(&dead_letters, "big"), big.len(), &format!("{prefix}dlq"));
    let small_letter = record_keyed(&dead_letters, "small");
    assert_eq!(small_letter.value.as_deref(), Some(small.as_slice()), "byte for byte");
    assert!(small_letter.headers.get(contract::DROPPED_VALUE_BYTES).is_none());
    assert_committed_to(&group, &topic, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn note_too_large_for_its_tier_copy_is_dead_lettered_as_a_stub_instead_of_retried_forever() {
    let prefix = unique_prefix("tier-too-large");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    let codec = NoteCodec::embedded();
    // A valid note whose record just fits the default limit; its tier copy's headers do not.
    let target = CLIENT_MESSAGE_LIMIT - 100;
    let mut huge = note("huge", 1);
    huge.body = "x".repeat(target);
    let overshoot = codec.encode(&huge).expect("encodes").len() - target;
    huge.body.truncate(target - overshoot);
    let value = codec.encode(&huge).expect("encodes");
    assert_eq!(value.len(), target);
    produce_notes(&topic, &[huge, note("after-huge", 1)]).await;

    let sink = ScriptedHttpSink::start(|note_id, _| if note_id == "huge" { 503 } else { 200 }).await;
    let sink_url = sink.url();
    let group = format!("{prefix}consumer");
    let mut flags = vec![
        "--topic-prefix",
        prefix.as_str(),
        "--sink",
        &sink_url,
        "--group",
        &group,
    ];
    flags.extend_from_slice(&SHORT_TIERS);
    let consumer = start_consumer(&flags);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    wait_for("after-huge applied", Duration::from_secs(30), || async {
        (!sink.requests_for("after-huge").is_empty()).then_some(())
    })
    .await;
    consumer.stop().await;

    let letter = &dead_letters[0];
    assert_eq!(letter.key.as_deref(), Some(b"huge".as_slice()));
    assert_is_stub(letter, value.len(), &format!("{prefix}retry-5s"));
    assert!(
        header(letter, contract::ERROR_MESSAGE).contains("503"),
        "the sink's failure is kept"
    );
    assert!(letter.headers.get(contract::TIER).is_none(), "it never reached a tier");
    assert!(read_all(&format!("{prefix}retry-5s")).await.is_empty());
    assert_eq!(sink.requests_for("huge").len(), 1, "tried once, not retried forever");
    assert_committed_to(&group, &topic, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_over_the_consumers_fetch_limit_is_still_consumed_and_dead_lettered_as_a_stub() {
    let prefix = unique_prefix("over-fetch-limit");
    create_test_topics(&prefix, &["retry-5s", "retry-1m", "dlq"], 1).await;
    create_test_topics_with_config(&prefix, &["notes"], 1, &[("max.message.bytes", "4194304")]).await;
    let topic = format!("{prefix}notes");
    // 1.5 MiB: over the consumer's max.partition.fetch.bytes (1 MiB) and its producer's
    // message.max.bytes, written by a producer configured for large records.
    let value = poison_value(1_572_864, 4);
    let mut large_args = KafkaArgs::for_brokers(broker());
    large_args.kafka_config = vec!["message.max.bytes=5000000".parse().expect("pair")];
    RecordProducer::new(&large_args, &ProducerSettings::default())
        .expect("producer")
        .send(&OutgoingRecord {
            topic: topic.clone(),
            partition: None,
            key: Some(b"larger".to_vec()),
            value: Some(value.clone()),
            headers: RecordHeaders::new(),
        })
        .await
        .expect("acknowledged");
    produce_notes(&topic, &[note("after-larger", 1)]).await;

    let (_directory, database, sink) = sqlite_sink();
    let group = format!("{prefix}consumer");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink, "--group", &group]);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    wait_for_applied(&database, "after-larger").await;
    consumer.stop().await;

    assert_is_stub(&dead_letters[0], value.len(), &format!("{prefix}dlq"));
    assert_eq!(dead_letters[0].key.as_deref(), Some(b"larger".as_slice()));
    assert_committed_to(&group, &topic, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_foreign_headers_are_carried_over_in_order_without_stalling_the_partition() {
    let prefix = unique_prefix("many-headers");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    let mut many = RecordHeaders::new();
    for index in 0..5000 {
        many.push(format!("h-{}", index % 1000), Some(index.to_string().into_bytes()));
    }
    produce_raw(&topic, Some(b"many"), Some(b"not avro"), many.clone()).await;
    produce_notes(&topic, &[note("after-many", 1)]).await;

    let (_directory, database, sink) = sqlite_sink();
    let group = format!("{prefix}consumer");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink, "--group", &group]);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    wait_for_applied(&database, "after-many").await;
    consumer.stop().await;

    let letter = &dead_letters[0];
    assert_eq!(foreign_headers(&letter.headers), foreign_headers(&many));
    assert_eq!(header(letter, contract::ERROR_KIND), "poison");
    assert_history_headers_at_most_once(letter, "the dead letter");
    assert_committed_to(&group, &topic, 2).await;
}

/// A record key, the contract headers it carries, and the header the poison message must name.
type GarbledCase<'case> = (&'case str, Vec<(&'case str, Vec<u8>)>, &'case str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_conflicting_and_non_utf8_contract_headers_make_the_record_poison_with_one_fresh_history() {
    let prefix = unique_prefix("garbled-contract");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    let cases: Vec<GarbledCase> = vec![
        (
            "attempt-twice",
            vec![(contract::ATTEMPT, b"1".to_vec()), (contract::ATTEMPT, b"2".to_vec())],
            contract::ATTEMPT,
        ),
        (
            "original-twice",
            vec![
                (contract::ATTEMPT, b"1".to_vec()),
                (contract::ORIGINAL_TOPIC, b"elsewhere".to_vec()),
                (contract::ORIGINAL_TOPIC, topic.as_bytes().to_vec()),
            ],
            contract::ORIGINAL_TOPIC,
        ),
        (
            "tier-not-utf8",
            vec![(contract::ATTEMPT, b"1".to_vec()), (contract::TIER, vec![0xFF, 0xFE])],
            contract::TIER,
        ),
        (
            "kind-not-utf8",
            vec![(contract::ERROR_KIND, vec![0xC3, 0x28])],
            contract::ERROR_KIND,
        ),
        (
            "replay-count-twice",
            vec![
                (contract::REPLAY_COUNT, b"1".to_vec()),
                (contract::REPLAY_COUNT, b"2".to_vec()),
            ],
            contract::REPLAY_COUNT,
        ),
    ];
    let codec = NoteCodec::embedded();
    let mut values = Vec::new();
    for (key, contract_headers, _) in &cases {
        let mut headers = RecordHeaders::new();
        headers.push("binary", Some(vec![0x80, 0x81]));
        for (header_key, value) in contract_headers {
            headers.push(*header_key, Some(value.clone()));
        }
        let value = codec.encode(&note(key, 1)).expect("encodes");
        produce_raw(&topic, Some(key.as_bytes()), Some(&value), headers).await;
        values.push(value);
    }
    produce_notes(&topic, &[note("after-garbled", 1)]).await;

    let (_directory, database, sink) = sqlite_sink();
    let group = format!("{prefix}consumer");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink, "--group", &group]);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), cases.len(), Duration::from_secs(60)).await;
    wait_for_applied(&database, "after-garbled").await;
    consumer.stop().await;

    assert_eq!(dead_letters.len(), cases.len());
    for (((key, _, culprit), value), offset) in cases.iter().zip(&values).zip(0..) {
        let letter = record_keyed(&dead_letters, key);
        assert_eq!(
            letter.value.as_deref(),
            Some(value.as_slice()),
            "{key}: bytes untouched"
        );
        assert_eq!(header(letter, contract::ERROR_KIND), "poison", "{key}");
        assert!(
            header(letter, contract::ERROR_MESSAGE).contains(culprit),
            "{key}: names {culprit}"
        );
        assert_eq!(header(letter, contract::ATTEMPT), "1", "{key}: a fresh history");
        assert_eq!(header(letter, contract::ORIGINAL_TOPIC), topic, "{key}");
        assert_eq!(header(letter, contract::ORIGINAL_OFFSET), offset.to_string(), "{key}");
        assert!(
            letter.headers.get(contract::TIER).is_none(),
            "{key}: the garbled tier is gone"
        );
        assert_history_headers_at_most_once(letter, key);
        assert_eq!(
            letter.headers.get("binary").and_then(|header| header.value.as_deref()),
            Some([0x80, 0x81].as_slice()),
            "{key}: foreign binary header byte for byte"
        );
    }
    // The replay count is not part of a failure history: a poison record keeps it as it came,
    // and `rebound dlq replay` refuses a dead letter whose count is unreadable.
    assert_eq!(
        record_keyed(&dead_letters, "replay-count-twice")
            .headers
            .count(contract::REPLAY_COUNT),
        2
    );
    let rows = read_all_notes(&database).expect("reads");
    assert_eq!(rows.len(), 1, "no garbled record reached the sink");
    assert_committed_to(&group, &topic, i64::try_from(cases.len()).expect("small") + 1).await;
}

/// kcat writes header keys as raw bytes, which the Rust client cannot: it is how a record with a
/// header key that is not UTF-8 reaches the broker here.
fn produce_with_kcat(topic: &str, key: &str, header_args: &[&[u8]], value: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut command = std::process::Command::new("kcat");
    command.args(["-P", "-b", &broker(), "-t", topic, "-k", key]);
    for header in header_args {
        command.arg("-H").arg(std::ffi::OsStr::from_bytes(header));
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat runs (Debian package `kcat`; scripts/test.sh installs it)");
    child.stdin.take().expect("stdin").write_all(value).expect("writes");
    assert!(child.wait().expect("kcat exits").success(), "kcat produced the record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_key_that_is_not_utf8_is_replaced_by_a_stand_in_instead_of_crashing_the_consumer() {
    let prefix = unique_prefix("non-utf8-key");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    produce_with_kcat(
        &topic,
        "odd-key",
        &[b"before=1", b"\xff\xfe-bad=2", b"after=3"],
        b"not avro at all",
    );
    produce_notes(&topic, &[note("after-odd-key", 1)]).await;

    let (_directory, database, sink) = sqlite_sink();
    let group = format!("{prefix}consumer");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink, "--group", &group]);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    wait_for_applied(&database, "after-odd-key").await;
    consumer.stop().await;

    let letter = record_keyed(&dead_letters, "odd-key");
    assert_eq!(header(letter, contract::ERROR_KIND), "poison");
    assert_eq!(
        foreign_headers(&letter.headers),
        vec![
            ("before".to_owned(), Some(b"1".to_vec())),
            (contract::UNREADABLE_HEADER.to_owned(), None),
            ("after".to_owned(), Some(b"3".to_vec())),
        ],
        "the unreadable header keeps its place as a stand-in; the others are carried byte-exact"
    );
    assert_committed_to(&group, &topic, 2).await;
}
