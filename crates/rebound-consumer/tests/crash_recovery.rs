//! A consumer process killed with SIGKILL in the middle of its work loses nothing: after a
//! restart every produced note version is in the sink or in the DLQ. Runs once per database
//! sink, SQLite and PostgreSQL (`for_each_database!`).

mod common;
#[path = "common/database.rs"]
mod database;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::start_scheduler;
use database::Database;
use rebound_schema::{Note, NoteCodec};
use rebound_testkit::{broker, create_test_topics, note, produce_notes, read_all, unique_prefix, wait_for};
use tokio::process::{Child, Command};

fn spawn_consumer_process(prefix: &str, sink: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rebound-consumer"))
        .args(["--brokers", &broker(), "--topic-prefix", prefix, "--sink", sink])
        .args(["--group", &format!("{prefix}consumer")])
        .args(["--tier", "retry-5s:200ms", "--tier", "retry-1m:500ms"])
        .args([
            "--inject-failures",
            "transient=0.1,permanent=0.02",
            "--inject-seed",
            "11",
        ])
        .args(["--batch-size", "100"])
        // The killed member's partitions move to the restarted one only after its session times
        // out; the broker's minimum keeps the test short (and exercises `-X` passthrough).
        .args(["-X", "session.timeout.ms=6000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("consumer binary starts")
}

/// Note versions that are neither stored (at that version or newer) nor in the DLQ.
async fn unaccounted(prefix: &str, database: &Database, produced: &[Note]) -> Vec<(String, i64)> {
    let stored: HashMap<String, i64> = database
        .rows()
        .await
        .into_iter()
        .map(|row| (row.note_id, row.version))
        .collect();
    let dead_lettered: Vec<(String, i64)> = read_all(&format!("{prefix}dlq"))
        .await
        .iter()
        .filter_map(|record| NoteCodec::embedded().decode(record.value.as_deref()?).ok())
        .map(|note| (note.note_id, note.version))
        .collect();
    produced
        .iter()
        .filter(|note| {
            let applied = stored
                .get(&note.note_id)
                .is_some_and(|version| *version >= note.version);
            let dead_lettered = dead_lettered.contains(&(note.note_id.clone(), note.version));
            !applied && !dead_lettered
        })
        .map(|note| (note.note_id.clone(), note.version))
        .collect()
}

async fn killed_consumer_loses_no_note_after_restart(database: Database) {
    let prefix = unique_prefix("kill-consumer");
    create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m", "dlq"], 3).await;
    // 400 notes with 5 versions each, produced in version order.
    let produced: Vec<Note> = (1..=5)
        .flat_map(|version| (0..400).map(move |index| note(&format!("crash-{index}"), version)))
        .collect();
    produce_notes(&format!("{prefix}notes"), &produced).await;
    let sink = database.sink_url();
    let scheduler = start_scheduler(&[
        "--topic-prefix",
        &prefix,
        "--tier",
        "retry-5s:200ms",
        "--tier",
        "retry-1m:500ms",
    ]);

    let mut first = spawn_consumer_process(&prefix, &sink);
    wait_for(
        "the first consumer to apply some notes",
        Duration::from_secs(60),
        || async { (!database.rows().await.is_empty()).then_some(()) },
    )
    .await;
    first.start_kill().expect("SIGKILL sent");
    let status = first.wait().await.expect("killed consumer reaped");
    assert!(!status.success(), "the consumer was killed, not stopped: {status}");
    let left_after_kill = unaccounted(&prefix, &database, &produced).await.len();

    let mut second = spawn_consumer_process(&prefix, &sink);
    let missing = wait_for(
        "every note version applied or dead-lettered",
        Duration::from_secs(120),
        || async {
            let missing = unaccounted(&prefix, &database, &produced).await;
            missing.is_empty().then_some(missing)
        },
    )
    .await;
    assert!(missing.is_empty());
    assert!(
        left_after_kill > 0,
        "the kill happened while work was left, or the test proves nothing"
    );
    second.start_kill().expect("SIGKILL sent");
    second.wait().await.expect("reaped");
    scheduler.stop().await;
}
for_each_database!(killed_consumer_loses_no_note_after_restart);
