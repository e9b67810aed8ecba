//! Criterion micro-benchmarks of `NoteCodec`: Avro single-object encoding and decoding of a
//! small (~300 B) and a large (~4 KiB) note, the per-record codec work of the producer and the
//! consumer, plus decoding a record written with an older schema version (schema resolution),
//! and decoding with apache-avro's generic reader, which the direct reader replaced.
//!
//! Run with `cargo bench -p rebound-schema --bench codec`; docs/performance.md records results.

use std::hint::black_box;

use apache_avro::Schema;
use apache_avro::types::{Record, Value};
use apache_avro::writer::datum::GenericDatumWriter;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rebound_schema::{Note, NoteCodec, SINGLE_OBJECT_MARKER, SchemaFingerprint};

/// Words of mixed UTF-8 width, as real notes have.
const WORDS: &[&str] = &[
    "meeting",
    "groceries",
    "café",
    "naïve",
    "日本語",
    "Grüße",
    "🚀",
    "review",
    "invoice",
    "München",
    "tomorrow",
    "the",
    "and",
    "before",
    "friday",
    "list",
];

fn text(target_bytes: usize) -> String {
    let mut text = String::new();
    for word in WORDS.iter().cycle() {
        if text.len() >= target_bytes {
            break;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(word);
    }
    text
}

/// A note whose encoding is close to the benchmark's size classes (body of `body_bytes`).
fn note(body_bytes: usize) -> Note {
    Note {
        note_id: "bench-1795848137-s0012345".to_owned(),
        user_id: "user-0412".to_owned(),
        device_id: "laptop".to_owned(),
        version: 7,
        title: text(24),
        body: text(body_bytes),
        tags: vec!["work".to_owned(), "later".to_owned()],
        updated_at: 1_764_300_000_123,
        deleted: false,
        pinned: true,
    }
}

/// `note` written with schemas/note.v1.avsc (no `pinned`), as an older producer would.
fn encode_with_v1_schema(note: &Note) -> Vec<u8> {
    let schema = Schema::parse_str(include_str!("../../../schemas/note.v1.avsc")).expect("note.v1.avsc parses");
    let mut record = Record::new(&schema).expect("note.v1.avsc is a record schema");
    record.put("note_id", note.note_id.as_str());
    record.put("user_id", note.user_id.as_str());
    record.put("device_id", note.device_id.as_str());
    record.put("version", note.version);
    record.put("title", note.title.as_str());
    record.put("body", note.body.as_str());
    record.put(
        "tags",
        Value::Array(note.tags.iter().map(|tag| Value::String(tag.clone())).collect()),
    );
    record.put("updated_at", Value::TimestampMillis(note.updated_at));
    record.put("deleted", note.deleted);
    let mut encoded = SINGLE_OBJECT_MARKER.to_vec();
    encoded.extend_from_slice(&SchemaFingerprint::of_library_form(&schema).0);
    let writer = GenericDatumWriter::builder(&schema).build().expect("v1 writer builds");
    writer.write_value(&mut encoded, record).expect("v1 record encodes");
    encoded
}

fn note_codec(criterion: &mut Criterion) {
    let codec = NoteCodec::embedded();
    let mut group = criterion.benchmark_group("note_codec");
    for (label, body_bytes) in [("small", 215), ("large", 4000)] {
        let note = note(body_bytes);
        let encoded = codec.encode(&note).expect("encodes");
        // Throughput in notes: criterion then reports notes per second next to the time.
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("encode", format!("{label}-{}B", encoded.len())),
            &note,
            |bench, note| {
                bench.iter(|| codec.encode(black_box(note)).expect("encodes"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("decode", format!("{label}-{}B", encoded.len())),
            &encoded,
            |bench, encoded| {
                bench.iter(|| codec.decode(black_box(encoded)).expect("decodes"));
            },
        );
        // The generic reader the direct one replaced, measured side by side with it.
        group.bench_with_input(
            BenchmarkId::new("decode_generic_reader", format!("{label}-{}B", encoded.len())),
            &encoded,
            |bench, encoded| {
                bench.iter(|| codec.decode_with_generic_reader(black_box(encoded)).expect("decodes"));
            },
        );
        let old = encode_with_v1_schema(&note);
        assert_eq!(codec.decode(&old).expect("v1 decodes").body, note.body);
        group.bench_with_input(
            BenchmarkId::new("decode_v1_writer", format!("{label}-{}B", old.len())),
            &old,
            |bench, old| {
                bench.iter(|| codec.decode(black_box(old)).expect("decodes"));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, note_codec);
criterion_main!(benches);
