//! The consumer with a real schema registry: Confluent-framed notes written by Confluent's own
//! Python serializer (with the current and the older schema version) are applied; a registry
//! outage makes records transient failures that the tiers bring back once it answers again,
//! never poison; an id the registry does not know is poison with a clear message.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{start_consumer, start_scheduler};
use rebound_registry::{RegistryArgs, RegistryClient};
use rebound_retry::{RecordHeaders, contract};
use rebound_schema::NoteCodec;
use rebound_sink_store::read_all_notes;
use rebound_testkit::{
    confluent_python, create_test_topics, note, produce_raw, read_all, registry_url, run_confluent_python,
    unique_prefix, wait_for, wait_for_records,
};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];

fn schema_file(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(name)
}

fn registry_client(url: &str) -> RegistryClient {
    let args = RegistryArgs {
        schema_registry_url: Some(url.to_owned()),
        schema_registry_basic_auth: None,
        schema_registry_basic_auth_file: None,
        schema_registry_bearer_token: None,
        schema_registry_bearer_token_file: None,
        schema_registry_ca_file: None,
        schema_registry_timeout: Duration::from_secs(5),
    };
    let config = args.into_config().expect("valid").expect("a registry");
    RegistryClient::new(&config).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_written_by_confluents_python_avro_serializer_are_applied() {
    let registry = registry_url();
    let prefix = unique_prefix("python-confluent");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    let current = serde_json::json!([
        {"note_id": "py-1", "user_id": "u", "device_id": "python", "version": 1, "title": "from python",
         "body": "written by confluent-kafka's AvroSerializer", "tags": ["a", "b"],
         "updated_at": 1_764_000_000_000_i64, "deleted": false, "pinned": true},
        {"note_id": "py-2", "user_id": "u", "device_id": "python", "version": 3, "title": "t", "body": "",
         "tags": [], "updated_at": 1_764_000_000_001_i64, "deleted": true, "pinned": false},
    ]);
    // The older schema version too: the subject then has two versions with two ids.
    let version_1 = serde_json::json!([
        {"note_id": "py-v1", "user_id": "u", "device_id": "python", "version": 2, "title": "old", "body": "v1",
         "tags": ["x"], "updated_at": 1_764_000_000_002_i64, "deleted": false},
    ]);
    for (schema, notes) in [("note.v1.avsc", &version_1), ("note.avsc", &current)] {
        let mut command = confluent_python();
        command
            .args(["produce", "--brokers", &rebound_testkit::broker(), "--topic", &topic])
            .args(["--registry-url", &registry, "--notes", &notes.to_string()])
            .arg("--schema")
            .arg(schema_file(schema));
        run_confluent_python(command).await;
    }
    let records = wait_for_records(&topic, 3, Duration::from_secs(30)).await;
    let ids: Vec<u32> = records
        .iter()
        .map(|record| {
            let value = record.value.as_deref().expect("a value");
            assert_eq!(value[0], 0, "confluent magic byte");
            u32::from_be_bytes([value[1], value[2], value[3], value[4]])
        })
        .collect();
    assert_ne!(ids[0], ids[1], "the two schema versions have two ids: {ids:?}");

    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let sink = format!("sqlite://{}", database.display());
    let consumer = start_consumer(&[
        "--topic-prefix",
        &prefix,
        "--sink",
        &sink,
        "--schema-registry-url",
        &registry,
    ]);
    let rows = wait_for("3 notes in sqlite", Duration::from_secs(60), || async {
        read_all_notes(&database).ok().filter(|rows| rows.len() == 3)
    })
    .await;
    consumer.stop().await;

    assert!(
        read_all(&format!("{prefix}dlq")).await.is_empty(),
        "nothing dead-lettered"
    );
    assert_eq!(rows.len(), 3);
    // Every field as stored, read back with SQL: (body, tags, deleted, pinned, version).
    let stored = |note_id: &str| -> (String, String, bool, bool, i64) {
        let connection = rusqlite::Connection::open(&database).expect("opens");
        connection
            .query_row(
                "SELECT body, tags_json, deleted, pinned, version FROM notes WHERE note_id = ?1",
                [note_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
            )
            .unwrap_or_else(|error| panic!("{note_id} applied: {error}"))
    };
    assert_eq!(
        stored("py-1"),
        (
            "written by confluent-kafka's AvroSerializer".to_owned(),
            r#"["a","b"]"#.to_owned(),
            false,
            true,
            1
        )
    );
    let (_, _, deleted, _, version) = stored("py-2");
    assert!(deleted);
    assert_eq!(version, 3);
    let (body, _, _, pinned, _) = stored("py-v1");
    assert_eq!(body, "v1");
    assert!(!pinned, "the v1 writer has no pinned field: the reader's default");
}

/// A loopback TCP gate in front of the registry: while closed, every connection is dropped at
/// once (a registry that is down); while open, bytes flow both ways.
struct RegistryGate {
    url: String,
    open: Arc<AtomicBool>,
}

impl RegistryGate {
    async fn start(registry: &str) -> Self {
        let (scheme_and_host, path) = registry.split_at(registry.find("/apis").unwrap_or(registry.len()));
        let upstream = scheme_and_host.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("address").port();
        let open = Arc::new(AtomicBool::new(false));
        let gate_open = Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !gate_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}{path}"),
            open,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_sends_nothing_to_the_dlq_and_loses_nothing() {
    let registry = registry_url();
    let prefix = unique_prefix("registry-outage");
    create_test_topics(&prefix, &TOPICS, 2).await;
    let topic = format!("{prefix}notes");
    let codec = NoteCodec::embedded();
    let schema_id = registry_client(&registry)
        .register(&format!("{topic}-value"), codec.current_schema_json())
        .await
        .expect("registered");
    const NOTES: usize = 20;
    for index in 0..NOTES {
        let note_id = format!("outage-{index}");
        let value = codec.encode_confluent(&note(&note_id, 1), schema_id).expect("encodes");
        produce_raw(&topic, Some(note_id.as_bytes()), Some(&value), RecordHeaders::new()).await;
    }

    let gate = RegistryGate::start(&registry).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let sink = format!("sqlite://{}", database.display());
    // Tiers long enough that the records are still in them when the registry comes back.
    let tiers = [
        "--topic-prefix",
        prefix.as_str(),
        "--tier",
        "retry-5s:1s",
        "--tier",
        "retry-1m:2s",
    ];
    let mut consumer_flags = tiers.to_vec();
    consumer_flags.extend_from_slice(&["--sink", &sink, "--schema-registry-url", &gate.url]);
    let consumer = start_consumer(&consumer_flags);
    let tier_records = wait_for_records(&format!("{prefix}retry-5s"), NOTES, Duration::from_secs(60)).await;
    for record in &tier_records {
        assert_eq!(
            record.headers.get_str(contract::ERROR_KIND),
            Some("transient"),
            "{:?}",
            record.headers
        );
        assert_eq!(
            record.value.as_deref(),
            Some(
                codec
                    .encode_confluent(
                        &note(
                            std::str::from_utf8(record.key.as_deref().expect("key")).expect("utf-8"),
                            1
                        ),
                        schema_id
                    )
                    .expect("encodes")
                    .as_slice()
            ),
            "the tier copy is byte for byte the record"
        );
    }
    assert!(
        read_all_notes(&database).expect("reads").is_empty(),
        "nothing applied while the registry is down"
    );
    gate.open.store(true, Ordering::SeqCst);
    let scheduler = start_scheduler(&tiers);
    wait_for(
        "every note applied after the outage",
        Duration::from_secs(90),
        || async { read_all_notes(&database).ok().filter(|rows| rows.len() == NOTES) },
    )
    .await;
    consumer.stop().await;
    scheduler.stop().await;
    assert!(
        read_all(&format!("{prefix}dlq")).await.is_empty(),
        "no record dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_id_the_registry_does_not_know_is_poison_naming_the_id() {
    let registry = registry_url();
    let prefix = unique_prefix("unknown-schema-id");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let mut value = vec![0, 0x7F, 0xFF, 0xFF, 0xF0];
    value.extend_from_slice(b"\x02a");
    produce_raw(
        &format!("{prefix}notes"),
        Some(b"ghost"),
        Some(&value),
        RecordHeaders::new(),
    )
    .await;
    let directory = tempfile::tempdir().expect("tempdir");
    let sink = format!("sqlite://{}", directory.path().join("notes.db").display());
    let consumer = start_consumer(&[
        "--topic-prefix",
        &prefix,
        "--sink",
        &sink,
        "--schema-registry-url",
        &registry,
    ]);
    let dead = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    consumer.stop().await;
    assert_eq!(dead[0].headers.get_str(contract::ERROR_KIND), Some("poison"));
    assert_eq!(dead[0].value.as_deref(), Some(value.as_slice()), "byte for byte");
    let message = dead[0].headers.get_str(contract::ERROR_MESSAGE).expect("a message");
    assert!(
        message.contains("schema id 2147483632") && message.contains("404"),
        "{message}"
    );
    assert!(read_all(&format!("{prefix}retry-5s")).await.is_empty(), "not retried");
}

/// Version 3 of the note schema, a temporary copy that adds an optional field (not in
/// `schemas/`: this build has never seen it, as when producers upgrade before consumers).
fn note_v3_schema() -> String {
    include_str!("../../../schemas/note.avsc").replacen(
        r#""fields": ["#,
        r#""fields": [{"name": "color", "type": ["null", "string"], "default": null},"#,
        1,
    )
}

/// A Confluent-framed record of a note written with `schema_text` under registry id `schema_id`.
fn confluent_record(schema_text: &str, schema_id: u32, note_id: &str) -> Vec<u8> {
    use apache_avro::types::{Record, Value};
    let schema = apache_avro::Schema::parse_str(schema_text).expect("schema parses");
    let mut record = Record::new(&schema).expect("a record schema");
    for (field, value) in [
        ("note_id", note_id),
        ("user_id", "u"),
        ("device_id", "d"),
        ("title", note_id),
        ("body", "b"),
    ] {
        record.put(field, value);
    }
    record.put("version", 1_i64);
    record.put("tags", Value::Array(vec![]));
    record.put("updated_at", Value::TimestampMillis(1_764_000_000_000));
    record.put("deleted", false);
    if schema_text.contains("\"pinned\"") {
        record.put("pinned", true);
    }
    if schema_text.contains("\"color\"") {
        record.put("color", Value::Union(1, Box::new(Value::String("red".to_owned()))));
    }
    let mut framed = vec![0];
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend_from_slice(
        &apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .expect("writer builds")
            .write_value_to_vec(record)
            .expect("encodes"),
    );
    framed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_schema_versions_1_2_and_a_new_3_are_all_applied() {
    let registry = registry_url();
    let prefix = unique_prefix("schema-v3");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    let client = registry_client(&registry);
    let subject = format!("{topic}-value");
    let v3 = note_v3_schema();
    let versions = [
        ("v1", include_str!("../../../schemas/note.v1.avsc").to_owned()),
        ("v2", include_str!("../../../schemas/note.avsc").to_owned()),
        ("v3", v3),
    ];
    for (note_id, schema_text) in &versions {
        let schema_id = client.register(&subject, schema_text).await.expect("registered");
        let value = confluent_record(schema_text, schema_id, note_id);
        produce_raw(&topic, Some(note_id.as_bytes()), Some(&value), RecordHeaders::new()).await;
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let sink = format!("sqlite://{}", database.display());
    let consumer = start_consumer(&[
        "--topic-prefix",
        &prefix,
        "--sink",
        &sink,
        "--schema-registry-url",
        &registry,
    ]);
    let rows = wait_for("v1, v2 and v3 notes in sqlite", Duration::from_secs(60), || async {
        read_all_notes(&database).ok().filter(|rows| rows.len() == 3)
    })
    .await;
    consumer.stop().await;
    let mut titles: Vec<&str> = rows.iter().map(|row| row.title.as_str()).collect();
    titles.sort_unstable();
    assert_eq!(titles, ["v1", "v2", "v3"]);
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
}
