//! Helpers for rebound's integration tests, which run against a real Kafka broker.
//!
//! The broker address comes from `REBOUND_TEST_BROKERS` (default `127.0.0.1:9092`). When no
//! broker answers there, [`broker`] panics with instructions: tests never skip silently. Every
//! test works in its own topics (a unique prefix), so tests can share one broker and run in
//! parallel. Waiting is always on a condition with a deadline, never a bare sleep.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

mod http_sink;
mod postgres;
mod registry;
mod service;

mod records;
pub use records::{
    assert_history_headers_at_most_once, foreign_headers, metric_sample, record_keyed, required_header, scrape_metrics,
};

use std::collections::BTreeMap;
use std::future::Future;
use std::net::ToSocketAddrs as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use http_sink::{ScriptedHttpSink, SinkRequest};
pub use postgres::{POSTGRES_ENV, fresh_postgres_database, postgres_url};
use rebound_kafka::{
    ConsumedRecord, KafkaArgs, OutgoingRecord, ProducerSettings, RecordProducer, TopicSpec, create_topics,
    read_topic_to_end,
};
use rebound_retry::RecordHeaders;
use rebound_schema::{Note, NoteCodec};
pub use registry::{PYTHON_ENV, REGISTRY_URL_ENV, confluent_python, registry_url, run_confluent_python};
pub use service::{RunningService, STOP_DEADLINE};

/// The environment variable naming the test broker.
pub const BROKERS_ENV: &str = "REBOUND_TEST_BROKERS";

/// The test broker's bootstrap address, checked to accept connections. Panics loudly when it
/// does not: an integration test without a broker must fail, not pass vacuously.
pub fn broker() -> String {
    let brokers = std::env::var(BROKERS_ENV).unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let first = brokers.split(',').next().unwrap_or_default().to_owned();
    let reachable = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).is_ok());
    assert!(
        reachable,
        "no Kafka broker answers at {brokers} ({BROKERS_ENV}). Integration tests need a real broker: \
         start one with `scripts/kafka-local.sh start`, or run everything with `scripts/test.sh`."
    );
    brokers
}

/// Connection flags for the test broker.
pub fn kafka_args() -> KafkaArgs {
    KafkaArgs::for_brokers(broker())
}

/// A topic prefix no other test (or earlier run) uses.
pub fn unique_prefix(test_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() % 1_000_000_000)
        .unwrap_or(0);
    format!(
        "t-{test_name}-{}-{}-{nanos}.",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `names` (prefixed) with `partitions` partitions each, replication 1.
pub async fn create_test_topics(prefix: &str, names: &[&str], partitions: i32) {
    create_test_topics_with_config(prefix, names, partitions, &[]).await;
}

/// Creates `names` (prefixed) as [`create_test_topics`] does, each with these topic configs
/// (`max.message.bytes`, say).
pub async fn create_test_topics_with_config(prefix: &str, names: &[&str], partitions: i32, config: &[(&str, &str)]) {
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    let specs: Vec<TopicSpec> = names
        .iter()
        .map(|name| TopicSpec {
            name: format!("{prefix}{name}"),
            partitions,
            replication_factor: 1,
            config: config.clone(),
        })
        .collect();
    create_topics(&kafka_args(), &specs, Duration::from_secs(30))
        .await
        .unwrap();
}

/// Waits until `condition` returns `Some`, polling every 100 ms; panics with `what` after
/// `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until consumer group `group` has committed every partition of `topic` at the end the
/// topic has now: the group's service has settled every record written so far.
pub async fn wait_for_group_at_end(group: &str, topic: &str, deadline: Duration) {
    let ends = rebound_kafka::fetch_topic_watermarks(&kafka_args(), topic, Duration::from_secs(10))
        .await
        .expect("watermarks");
    wait_for(&format!("{group} committed {topic} to its end"), deadline, || async {
        let committed = rebound_kafka::fetch_committed_offsets(&kafka_args(), group, topic, Duration::from_secs(5))
            .await
            .ok()?;
        ends.partitions
            .iter()
            .all(|(partition, (_, high))| committed.get(partition) == Some(high))
            .then_some(())
    })
    .await;
}

/// Every record of a topic as it is now.
pub async fn read_all(topic: &str) -> Vec<ConsumedRecord> {
    read_topic_to_end(&kafka_args(), topic, Duration::from_secs(60))
        .await
        .unwrap()
}

/// Waits until a topic holds at least `count` records and returns them all.
pub async fn wait_for_records(topic: &str, count: usize, deadline: Duration) -> Vec<ConsumedRecord> {
    wait_for(&format!("{count} records in {topic}"), deadline, || async {
        let records = read_all(topic).await;
        (records.len() >= count).then_some(records)
    })
    .await
}

/// The acknowledging producer for the test broker, shared by every test of the process: an
/// idempotent producer's start-up handshake costs a broker round trip or more.
pub fn producer() -> RecordProducer {
    static PRODUCER: OnceLock<RecordProducer> = OnceLock::new();
    PRODUCER
        .get_or_init(|| RecordProducer::new(&kafka_args(), &ProducerSettings::default()).unwrap())
        .clone()
}

/// Produces raw bytes and waits for the acknowledgement.
pub async fn produce_raw(topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, headers: RecordHeaders) {
    producer()
        .send(&OutgoingRecord {
            topic: topic.to_owned(),
            partition: None,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers,
        })
        .await
        .unwrap();
}

/// Bytes that neither compress nor decode: a deterministic pseudo-random sequence (xorshift), so
/// a test can fill a record close to a size limit that compression would otherwise defeat.
pub fn incompressible_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Produces notes (single-object Avro, keyed by id) in order and waits for every acknowledgement.
pub async fn produce_notes(topic: &str, notes: &[Note]) {
    let producer = producer();
    for note in notes {
        producer
            .send(&OutgoingRecord {
                topic: topic.to_owned(),
                partition: None,
                key: Some(note.note_id.clone().into_bytes()),
                value: Some(NoteCodec::embedded().encode(note).unwrap()),
                headers: RecordHeaders::new(),
            })
            .await
            .unwrap();
    }
}

/// The headers of a record the consumer sent to the `retry-5s` tier of `prefix`, due at
/// `due_ms`, first consumed from `notes` partition 0 at `original_offset`.
pub fn tier_record_headers(prefix: &str, due_ms: i64, original_offset: usize) -> RecordHeaders {
    use rebound_retry::contract;
    let mut headers = RecordHeaders::new();
    headers.set(contract::ATTEMPT, "1");
    headers.set(contract::TIER, format!("{prefix}retry-5s"));
    headers.set(contract::DUE_TIMESTAMP, due_ms.to_string());
    headers.set(contract::ORIGINAL_TOPIC, format!("{prefix}notes"));
    headers.set(contract::ORIGINAL_PARTITION, "0");
    headers.set(contract::ORIGINAL_OFFSET, original_offset.to_string());
    headers.set(
        contract::FIRST_FAILURE_TIMESTAMP,
        due_ms.saturating_sub(5000).to_string(),
    );
    headers.set(contract::ERROR_KIND, "transient");
    headers.set(contract::ERROR_MESSAGE, "sink timed out");
    headers
}

/// A valid note.
pub fn note(note_id: &str, version: i64) -> Note {
    Note {
        note_id: note_id.to_owned(),
        user_id: "user-1".to_owned(),
        device_id: "test".to_owned(),
        version,
        title: format!("{note_id} v{version}"),
        body: "body ✓".to_owned(),
        tags: vec!["test".to_owned()],
        updated_at: 1_764_300_000_000 + version,
        deleted: false,
        pinned: false,
    }
}

/// A loopback TCP port that was free a moment ago, for a server a test starts as a process.
pub fn free_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap()
}

/// The first port of `count` consecutive loopback ports that were all free a moment ago, taken
/// from below the kernel's ephemeral range, for a server that listens on several ports derived
/// from one (the local broker: client port, controller +1, SASL +2, TLS +3..+5).
///
/// Not [`free_local_port`]: that port comes from the ephemeral range, where every outgoing
/// connection of the machine also takes its local port, so the ports after it can be taken by a
/// client connection between this check and the server's bind (the broker then exits with
/// "Address already in use"). Ports below the range are only ever taken by explicit binds.
pub fn free_local_port_block(count: u16) -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let lowest = 20_000u16;
    let highest = ephemeral_start.saturating_sub(count).max(lowest + 1);
    // Start where the process id points so that concurrent test binaries spread out, then walk.
    let span = highest - lowest;
    let offset = (std::process::id() % u32::from(span)) as u16;
    for step in 0..span {
        let first = lowest + (offset + step) % span;
        let all_free = (0..count).all(|index| std::net::TcpListener::bind(("127.0.0.1", first + index)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no {count} consecutive free loopback ports between {lowest} and {highest}");
}

/// Waits until an HTTP GET of `url` answers 200.
pub async fn wait_for_http_ok(url: &str, deadline: Duration) {
    let client = reqwest::Client::new();
    wait_for(&format!("{url} to answer 200"), deadline, || async {
        let response = client.get(url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

/// Fails, naming each one, when a long flag of `command` (its subcommands included) is not
/// mentioned as `--flag` in the README: the README's flag tables are written by hand, so this
/// is what keeps them from drifting from the clap definitions. Flags every binary shares
/// (`--brokers`, ...) count once they appear anywhere in the README.
pub fn assert_readme_mentions_every_flag(command: &clap::Command) {
    let readme_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let mut missing = Vec::new();
    let mut checked = 0;
    let mut pending = vec![(command.get_name().to_owned(), command.clone())];
    while let Some((path, command)) = pending.pop() {
        for argument in command.get_arguments() {
            let Some(long) = argument.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            checked += 1;
            let mentioned = readme.contains(&format!("--{long}`"))
                || readme.contains(&format!("--{long} "))
                || readme.contains(&format!("--{long}="))
                || readme.contains(&format!("--{long}]"))
                || readme.contains(&format!("--{long},"))
                || readme.contains(&format!("--{long})"));
            if !mentioned {
                missing.push(format!("{path} --{long}"));
            }
        }
        for subcommand in command.get_subcommands() {
            pending.push((format!("{path} {}", subcommand.get_name()), subcommand.clone()));
        }
    }
    assert!(checked > 0, "{} has no long flags to check", command.get_name());
    assert!(
        missing.is_empty(),
        "README.md does not document these flags (add them to its flag tables): {missing:?}"
    );
}
