//! `rebound dlq replay` (redrive): sends selected dead letters back to their original topic,
//! each exactly once across every run, interrupted or not.
//!
//! Each batch of copies is sent in one Kafka transaction together with one replay-ledger marker
//! per dead letter. A `read_committed` reader (librdkafka's default, so every rebound service)
//! sees a copy exactly when its marker is committed, and a run skips every dead letter the
//! ledger already names. A run killed at any point leaves an open transaction that the next run
//! aborts when it starts (same transactional id), so nothing of it ever becomes visible. The
//! same id fences a second replay of the DLQ started while one runs. `docs/dlq.md` has the full
//! argument and its limits.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use rebound_kafka::{KafkaArgs, OutgoingRecord, TransactionalProducer, ensure_replay_ledger_topic, topic_exists};
use rebound_retry::{RecordHeaders, ReplayMarker, ReplayPlan, plan_replay};
use rebound_service::Shutdown;
use serde::Serialize;
use tokio::time::Instant;

use super::letter::DeadLetter;
use super::{DlqFilterArgs, DlqTopicArgs, OutputFormat, UsageError, open_dlq_scan, read_ledger, resolve_filter};

/// Most dead letters sent in one transaction.
const MAX_BATCH: usize = 100;
/// Longest a selected dead letter waits for its batch to be sent. Also bounds, with the rate,
/// how long a transaction holds back `read_committed` readers of the target partitions.
const MAX_BATCH_AGE: Duration = Duration::from_millis(200);
/// How long a transaction abandoned by a killed replay may stay open before the broker aborts
/// it; `read_committed` consumers of the target partitions wait at most this long. The next
/// replay aborts it at once.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `rebound dlq replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqReplayArgs {
    /// Topics and broker timeout.
    #[command(flatten)]
    pub topics: DlqTopicArgs,

    /// Which dead letters to replay.
    #[command(flatten)]
    pub filter: DlqFilterArgs,

    /// Replay at most this many dead letters; the rest stay for a later run.
    #[arg(long, env = "REBOUND_DLQ_LIMIT", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Send every copy to this topic instead of its `retry.original.topic` (prefix applied).
    #[arg(long, env = "REBOUND_DLQ_REPLAY_TO", value_name = "TOPIC")]
    pub to: Option<String>,

    /// Print what would be replayed; send nothing and record nothing.
    #[arg(long, env = "REBOUND_DLQ_DRY_RUN")]
    pub dry_run: bool,

    /// Most dead letters sent per second: `20/s`, `600/m`, or a plain number per second.
    #[arg(long, env = "REBOUND_DLQ_REPLAY_RATE", value_name = "N/s")]
    pub rate: Option<Rate>,

    /// Refuse (and report) dead letters already replayed this many times, by their
    /// `retry.replay.count`, so a record that keeps failing cannot cycle forever.
    #[arg(long, env = "REBOUND_DLQ_MAX_REPLAYS", default_value_t = 3)]
    pub max_replays: u32,

    /// Kafka transactional id of the replay. Replays of one DLQ must share it: it is what stops
    /// two of them running at once. Default: `rebound-dlq-replay.` and the ledger topic.
    #[arg(long, env = "REBOUND_DLQ_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,

    /// `text` for people, or `json`: one JSON object per line for each dead letter replayed or
    /// refused, then a summary object.
    #[arg(long, env = "REBOUND_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// A replay rate in records per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
}

impl Rate {
    /// Time between two sends.
    fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (number, seconds) = match trimmed.split_once('/') {
            None => (trimmed, 1.0),
            Some((number, "s" | "sec")) => (number, 1.0),
            Some((number, "m" | "min")) => (number, 60.0),
            Some((number, "h")) => (number, 3600.0),
            Some(_) => return Err(format!("{text:?}: expected N/s, N/m or N/h, such as 20/s")),
        };
        let count: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: expected a number of records, such as 20/s"))?;
        let per_second = count / seconds;
        if !per_second.is_finite() || per_second <= 0.0 || per_second > 1_000_000.0 {
            return Err(format!("{text:?}: the rate must be above 0 and at most 1000000/s"));
        }
        Ok(Self { per_second })
    }
}

/// What happened to one dead letter during a replay, reported as it happens.
#[derive(Debug)]
pub enum ReplayEvent<'event> {
    /// One more dead letter was read; `total` is the topic's record count.
    Scanned {
        /// Dead letters read so far.
        scanned: u64,
        /// Records in the topic when the replay started.
        total: u64,
    },
    /// The copy was sent and committed (in a dry run: would be sent).
    Replayed {
        /// The dead letter.
        letter: &'event DeadLetter,
        /// Where the copy went.
        target: &'event str,
        /// The copy's `retry.replay.count`.
        replay_count: u32,
    },
    /// The ledger says an earlier replay sent it already; skipped.
    AlreadyReplayed {
        /// The dead letter.
        letter: &'event DeadLetter,
    },
    /// Selected but not replayed.
    Refused {
        /// The dead letter.
        letter: &'event DeadLetter,
        /// Why.
        reason: &'event str,
    },
}

/// A selected dead letter that was not replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedDeadLetter {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// Its key, lossy UTF-8.
    pub key: Option<String>,
    /// Its error kind.
    pub kind: String,
    /// Its `retry.replay.count`.
    pub replay_count: Option<u32>,
    /// Why it was not replayed.
    pub reason: String,
}

/// The outcome of a replay run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// Its replay ledger.
    pub ledger_topic: String,
    /// Nothing was sent.
    pub dry_run: bool,
    /// Dead letters read.
    pub scanned: u64,
    /// Dead letters the filters selected.
    pub selected: u64,
    /// Copies sent and committed (in a dry run: that would be sent).
    pub replayed: u64,
    /// Copies by target topic.
    pub replayed_by_target: BTreeMap<String, u64>,
    /// Selected dead letters an earlier replay sent already.
    pub already_replayed: u64,
    /// Selected dead letters not replayed, and why.
    pub refused: Vec<RefusedDeadLetter>,
    /// The run stopped at `--limit`; more dead letters may be selected.
    pub stopped_at_limit: bool,
    /// The run was stopped (SIGINT, SIGTERM) after committing the batch in hand.
    pub interrupted: bool,
}

impl ReplayReport {
    /// A few lines for a person.
    pub fn render_text(&self) -> String {
        let targets = self
            .replayed_by_target
            .iter()
            .map(|(topic, count)| format!("{topic}: {count}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut lines = vec![if self.dry_run {
            format!(
                "dry run: would replay {} dead letters{}; nothing was sent",
                self.replayed,
                if targets.is_empty() {
                    String::new()
                } else {
                    format!(" ({targets})")
                }
            )
        } else {
            format!(
                "replayed {} dead letters{}",
                self.replayed,
                if targets.is_empty() {
                    String::new()
                } else {
                    format!(" ({targets})")
                }
            )
        }];
        lines.push(format!(
            "selected {} of {} dead letters read from {}",
            self.selected, self.scanned, self.dlq_topic
        ));
        lines.push(format!(
            "already replayed by an earlier run (skipped): {}",
            self.already_replayed
        ));
        lines.push(format!("refused: {}", self.refused.len()));
        if self.stopped_at_limit {
            lines.push("stopped at --limit; more dead letters may be selected".to_owned());
        }
        if self.interrupted {
            lines.push("interrupted: run the same command again to replay the rest".to_owned());
        }
        lines.join("\n") + "\n"
    }
}

/// A selected dead letter waiting in the current batch.
struct PendingCopy {
    letter: DeadLetter,
    plan: ReplayPlan,
}

/// Replays the dead letters the filters select, calling `on_event` as each one is handled.
///
/// Returns the report; an error means the run stopped early (the broker failed, or another
/// replay took over). Whatever was committed before stays committed, and running the same
/// command again resumes: dead letters already replayed are skipped. When `stop` is triggered
/// the run sends the batch in hand, then ends with `interrupted` set.
pub async fn replay_dead_letters(
    kafka: &KafkaArgs,
    args: &DlqReplayArgs,
    now_ms: i64,
    stop: &Shutdown,
    mut on_event: impl FnMut(ReplayEvent<'_>),
) -> anyhow::Result<ReplayReport> {
    let filter = resolve_filter(&args.filter, &args.topics, now_ms)?;
    let dlq_topic = args.topics.dlq();
    let ledger_topic = args.topics.ledger();
    let target = args.to.as_deref().map(|topic| args.topics.naming.prefixed(topic));
    if target.as_deref() == Some(dlq_topic.as_str()) {
        return Err(UsageError(format!("invalid --to: {dlq_topic} is the dead-letter topic itself")).into());
    }
    if ledger_topic == dlq_topic || target.as_deref() == Some(ledger_topic.as_str()) {
        return Err(UsageError(format!(
            "invalid --ledger-topic: {ledger_topic} must differ from the DLQ and the target"
        ))
        .into());
    }
    let timeout = args.topics.broker_wait.timeout;
    let mut scan = open_dlq_scan(kafka, &args.topics).await?;
    let mut target_exists: HashMap<String, bool> = HashMap::new();
    if let Some(target) = &target {
        let exists = topic_exists(kafka, target, timeout)
            .await
            .with_context(|| format!("cannot check target topic {target} on brokers {}", kafka.brokers()))?;
        anyhow::ensure!(exists, "target topic {target} does not exist (--to)");
        target_exists.insert(target.clone(), true);
    }

    // The producer starts (and fences any other replay of this DLQ, aborting what it left
    // open) before the ledger is read, so the ledger read here is final: nobody else can add a
    // marker while this run works.
    let producer = if args.dry_run {
        None
    } else {
        ensure_replay_ledger_topic(kafka, &ledger_topic, timeout)
            .await
            .with_context(|| format!("cannot create the replay ledger topic {ledger_topic}"))?;
        let transactional_id = args
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("rebound-dlq-replay.{ledger_topic}"));
        Some(
            TransactionalProducer::start(kafka, &transactional_id, TRANSACTION_TIMEOUT, timeout)
                .await
                .with_context(|| {
                    format!(
                        "cannot start the transactional producer {transactional_id} on brokers {}",
                        kafka.brokers()
                    )
                })?,
        )
    };
    let ledger = read_ledger(kafka, &args.topics).await?;

    let total = u64::try_from(scan.record_count()).unwrap_or(0);
    let mut report = ReplayReport {
        dlq_topic: dlq_topic.clone(),
        ledger_topic: ledger_topic.clone(),
        dry_run: args.dry_run,
        ..ReplayReport::default()
    };
    let mut pacer = Pacer::new(if args.dry_run { None } else { args.rate });
    let mut pending: Vec<PendingCopy> = Vec::new();
    let mut pending_since = Instant::now();
    let mut queued: u64 = 0;
    'scan: while let Some(batch) = scan.next_batch().await? {
        for record in batch {
            if stop.is_triggered() {
                report.interrupted = true;
                break 'scan;
            }
            report.scanned += 1;
            on_event(ReplayEvent::Scanned {
                scanned: report.scanned,
                total,
            });
            let replayed = ledger.contains(record.partition, record.offset);
            let letter = DeadLetter::new(record, replayed);
            if !filter.matches(&letter) {
                continue;
            }
            report.selected += 1;
            if letter.replayed {
                report.already_replayed += 1;
                on_event(ReplayEvent::AlreadyReplayed { letter: &letter });
                continue;
            }
            let plan = match plan_replay(&letter.record.headers, &dlq_topic, target.as_deref(), args.max_replays) {
                Ok(plan) => plan,
                Err(refusal) => {
                    refuse(&mut report, &letter, &refusal.to_string(), &mut on_event);
                    continue;
                }
            };
            if plan.topic == ledger_topic {
                refuse(
                    &mut report,
                    &letter,
                    "its original topic is the replay ledger",
                    &mut on_event,
                );
                continue;
            }
            if !target_exists.contains_key(&plan.topic) {
                let exists = topic_exists(kafka, &plan.topic, timeout)
                    .await
                    .with_context(|| format!("cannot check target topic {}", plan.topic))?;
                target_exists.insert(plan.topic.clone(), exists);
            }
            if target_exists.get(&plan.topic) != Some(&true) {
                let reason = format!("target topic {} does not exist", plan.topic);
                refuse(&mut report, &letter, &reason, &mut on_event);
                continue;
            }
            queued += 1;
            if args.dry_run {
                record_replayed(&mut report, &letter, &plan, &mut on_event);
            } else if let Some(producer) = &producer {
                let due = !pending.is_empty()
                    && (pending.len() >= MAX_BATCH || pacer.next_slot() >= pending_since + MAX_BATCH_AGE);
                if due {
                    send_batch(
                        producer,
                        &ledger_topic,
                        &dlq_topic,
                        &mut pending,
                        &mut report,
                        &mut on_event,
                    )
                    .await?;
                }
                // A stop during a long wait for the rate lands here; the record is not queued.
                if !pacer.wait(stop).await {
                    report.interrupted = true;
                    break 'scan;
                }
                if pending.is_empty() {
                    pending_since = Instant::now();
                }
                pending.push(PendingCopy { letter, plan });
            }
            if args.limit.is_some_and(|limit| queued >= limit) {
                report.stopped_at_limit = report.scanned < total;
                break 'scan;
            }
        }
        if let Some(producer) = &producer
            && !pending.is_empty()
            && pending_since.elapsed() >= MAX_BATCH_AGE
        {
            send_batch(
                producer,
                &ledger_topic,
                &dlq_topic,
                &mut pending,
                &mut report,
                &mut on_event,
            )
            .await?;
        }
    }
    if let Some(producer) = &producer {
        send_batch(
            producer,
            &ledger_topic,
            &dlq_topic,
            &mut pending,
            &mut report,
            &mut on_event,
        )
        .await?;
    }
    Ok(report)
}

fn refuse(report: &mut ReplayReport, letter: &DeadLetter, reason: &str, on_event: &mut impl FnMut(ReplayEvent<'_>)) {
    report.refused.push(RefusedDeadLetter {
        partition: letter.record.partition,
        offset: letter.record.offset,
        key: letter
            .record
            .key
            .as_deref()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        kind: letter.kind_label().to_owned(),
        replay_count: letter.replay_count(),
        reason: reason.to_owned(),
    });
    on_event(ReplayEvent::Refused { letter, reason });
}

fn record_replayed(
    report: &mut ReplayReport,
    letter: &DeadLetter,
    plan: &ReplayPlan,
    on_event: &mut impl FnMut(ReplayEvent<'_>),
) {
    report.replayed += 1;
    *report.replayed_by_target.entry(plan.topic.clone()).or_default() += 1;
    on_event(ReplayEvent::Replayed {
        letter,
        target: &plan.topic,
        replay_count: plan.replay_count,
    });
}

/// Sends the pending copies and their ledger markers in one transaction. Only after the commit
/// are they counted as replayed.
async fn send_batch(
    producer: &TransactionalProducer,
    ledger_topic: &str,
    dlq_topic: &str,
    pending: &mut Vec<PendingCopy>,
    report: &mut ReplayReport,
    on_event: &mut impl FnMut(ReplayEvent<'_>),
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut records = Vec::with_capacity(pending.len() * 2);
    for copy in pending.iter() {
        records.push(OutgoingRecord {
            topic: copy.plan.topic.clone(),
            partition: None,
            key: copy.letter.record.key.clone(),
            value: copy.letter.record.value.clone(),
            headers: copy.plan.headers.clone(),
        });
        let marker = ReplayMarker::new(
            dlq_topic,
            copy.letter.record.partition,
            copy.letter.record.offset,
            &copy.plan.topic,
        );
        records.push(OutgoingRecord {
            topic: ledger_topic.to_owned(),
            partition: None,
            key: Some(marker.key),
            value: Some(marker.value),
            headers: RecordHeaders::new(),
        });
    }
    if let Err(error) = producer.send_atomically(&records).await {
        let stopped = format!(
            "replay stopped after {} dead letters were replayed; nothing of its last batch ({} dead \
             letters) was delivered",
            report.replayed,
            pending.len()
        );
        if error.is_fenced() {
            return Err(anyhow::Error::new(error).context(format!(
                "another `rebound dlq replay` of {dlq_topic} started and took over: {stopped}. The other \
                 replay goes on; no dead letter is sent by both"
            )));
        }
        return Err(anyhow::Error::new(error).context(format!(
            "{stopped}. Run the same command again to resume: dead letters already replayed are skipped"
        )));
    }
    for copy in pending.drain(..) {
        record_replayed(report, &copy.letter, &copy.plan, on_event);
    }
    Ok(())
}

/// Spaces sends `1/rate` apart; without a rate, never waits.
struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(rate: Option<Rate>) -> Self {
        Self {
            interval: rate.map(Rate::interval),
            next: Instant::now(),
        }
    }

    /// When the next send may happen.
    fn next_slot(&self) -> Instant {
        self.next.max(Instant::now())
    }

    /// Takes the next send slot, given the time now, and returns it.
    fn reserve(&mut self, now: Instant) -> Instant {
        let slot = self.next.max(now);
        if let Some(interval) = self.interval {
            self.next = slot + interval;
        }
        slot
    }

    /// Waits for the next slot; false when `stop` came first.
    async fn wait(&mut self, stop: &Shutdown) -> bool {
        let slot = self.reserve(Instant::now());
        tokio::select! {
            () = tokio::time::sleep_until(slot) => true,
            () = stop.wait() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_per_second_minute_and_hour() {
        let per_second = |text: &str| text.parse::<Rate>().expect(text).per_second;
        assert!((per_second("20/s") - 20.0).abs() < f64::EPSILON);
        assert!((per_second("20") - 20.0).abs() < f64::EPSILON);
        assert!((per_second("600/m") - 10.0).abs() < f64::EPSILON);
        assert!((per_second("0.5/s") - 0.5).abs() < f64::EPSILON);
        assert!((per_second("3600/h") - 1.0).abs() < f64::EPSILON);
        for bad in ["0/s", "-1/s", "fast", "10/d", "inf", "NaN/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(
            "20/s".parse::<Rate>().expect("valid").interval(),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn the_pacer_spaces_sends_by_the_rate_and_does_not_bank_idle_time() {
        let start = Instant::now();
        let mut pacer = Pacer {
            interval: Some("10/s".parse::<Rate>().expect("valid").interval()),
            next: start,
        };
        let slots: Vec<Duration> = (0..3).map(|_| pacer.reserve(start) - start).collect();
        assert_eq!(
            slots,
            vec![Duration::ZERO, Duration::from_millis(100), Duration::from_millis(200)]
        );
        // After a pause (a slow scan), the next slot is now, not a burst of missed slots.
        let later = start + Duration::from_secs(5);
        assert_eq!(pacer.reserve(later), later);
        assert_eq!(pacer.reserve(later), later + Duration::from_millis(100));
        let mut unlimited = Pacer {
            interval: None,
            next: start,
        };
        assert_eq!(unlimited.reserve(start), start);
        assert_eq!(unlimited.reserve(start), start);
    }

    #[test]
    fn the_report_says_what_a_dry_run_did_not_do() {
        let report = ReplayReport {
            dlq_topic: "dlq".to_owned(),
            dry_run: true,
            replayed: 2,
            replayed_by_target: BTreeMap::from([("notes".to_owned(), 2)]),
            selected: 3,
            scanned: 5,
            ..ReplayReport::default()
        };
        let text = report.render_text();
        assert!(
            text.contains("would replay 2 dead letters (notes: 2); nothing was sent"),
            "{text}"
        );
        assert!(text.contains("selected 3 of 5"), "{text}");
    }
}
