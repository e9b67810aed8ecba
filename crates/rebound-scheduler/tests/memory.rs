//! The scheduler's memory against a real broker, measured on a `rebound-scheduler` process:
//! records of 4 MiB held until due must not take more memory than `--read-ahead-bytes` allows,
//! plus what the process needs anyway. Alone in its test binary, so that no other test's
//! traffic shares the broker's attention while the peak is taken.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rebound_kafka::{KafkaArgs, OutgoingRecord, ProducerSettings, RecordProducer, fetch_topic_watermarks};
use rebound_service::now_epoch_ms;
use rebound_testkit::{
    broker, create_test_topics_with_config, free_local_port, incompressible_bytes, unique_prefix, wait_for,
    wait_for_http_ok,
};

const MIB: u64 = 1024 * 1024;
/// Size of each record's value.
const RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Records produced: 192 MiB in all, three times the default byte bound.
const RECORDS: usize = 48;

/// A `rebound-scheduler` process, killed when dropped so a failing test leaves none behind.
struct SchedulerProcess {
    child: Child,
}

impl SchedulerProcess {
    fn start(prefix: &str, metrics_port: u16, extra_flags: &[&str]) -> Self {
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{prefix}scheduler.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rebound-scheduler"))
            .args([
                "--brokers",
                &broker(),
                "--topic-prefix",
                prefix,
                "--group",
                &format!("{prefix}scheduler"),
                "--tier",
                "retry-5s:5s",
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
                // The republished copies are as large as the records.
                "-X",
                "message.max.bytes=8388608",
            ])
            .args(extra_flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("scheduler starts");
        Self { child }
    }

    /// The process's peak resident memory so far (`VmHWM`), in bytes.
    fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("process status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in kB");
        kib * 1024
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_records_held_until_due_stay_within_read_ahead_bytes() {
    let prefix = unique_prefix("read-ahead-bytes");
    create_test_topics_with_config(
        &prefix,
        &["notes", "retry-5s", "dlq"],
        4,
        &[("max.message.bytes", "8388608")],
    )
    .await;
    let bound_mib: u64 = 32;
    let port = free_local_port();
    // The time read-ahead is stretched to an hour so that only the byte bound can stop reading:
    // the count and time rules alone hold 5000 records a partition, 20 GB of these.
    let bound_flag = format!("{bound_mib}MiB");
    let scheduler = SchedulerProcess::start(
        &prefix,
        port,
        &["--read-ahead-time", "1h", "--read-ahead-bytes", &bound_flag],
    );
    wait_for_http_ok(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(60)).await;
    let baseline = scheduler.peak_rss_bytes();

    let args = KafkaArgs {
        kafka_config: vec!["message.max.bytes=8388608".parse().expect("valid pair")],
        ..KafkaArgs::for_brokers(broker())
    };
    let producer = RecordProducer::new(&args, &ProducerSettings::default()).expect("producer");
    // All due 30 s out: every record is read and held before any is due.
    let due_ms = now_epoch_ms() + 30_000;
    let value = incompressible_bytes(RECORD_BYTES, 11);
    let sends = (0..RECORDS).map(|sequence| {
        let record = OutgoingRecord {
            topic: format!("{prefix}retry-5s"),
            partition: Some(i32::try_from(sequence % 4).expect("small")),
            key: Some(format!("big-{sequence}").into_bytes()),
            value: Some(value.clone()),
            headers: rebound_testkit::tier_record_headers(&prefix, due_ms, sequence),
        };
        let producer = producer.clone();
        async move { producer.send(&record).await.expect("acknowledged") }
    });
    futures::future::join_all(sends).await;

    wait_for(
        &format!("{RECORDS} records republished"),
        Duration::from_secs(180),
        || async {
            let watermarks = fetch_topic_watermarks(&args, &format!("{prefix}notes"), Duration::from_secs(10))
                .await
                .ok()?;
            (watermarks.record_count() >= i64::try_from(RECORDS).expect("small")).then_some(())
        },
    )
    .await;
    let peak = scheduler.peak_rss_bytes();
    drop(scheduler);

    eprintln!(
        "scheduler VmHWM: {} MiB at start, {} MiB peak after {} MiB of {} MiB records passed through, bound {bound_mib} MiB",
        baseline / MIB,
        peak / MIB,
        RECORDS * RECORD_BYTES / (1024 * 1024),
        RECORD_BYTES / (1024 * 1024),
    );
    // Per byte held, at most four in memory at the peak of a release round: the record held,
    // its copy in flight, librdkafka's copy of that and its compressed batch; plus the bounded
    // prefetch. Far below the 192 MiB that passed through (before the byte bound: 566 MiB peak
    // here; with it, 94 to 110 MiB).
    let allowance = 4 * bound_mib * MIB;
    assert!(
        peak <= baseline + allowance,
        "peak {} MiB above start {} MiB plus {} MiB",
        peak / MIB,
        baseline / MIB,
        allowance / MIB
    );
}
