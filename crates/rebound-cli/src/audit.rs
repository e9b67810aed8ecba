//! `rebound audit`: accounts for every note version a producer reported as acknowledged. Each
//! version must be applied in the SQLite or PostgreSQL sink (the stored version is at least it) or sit in the
//! DLQ; anything else is lost. Also tallies how the stored versions got there, and with
//! `--extended` the figures a soak test needs: duplicates in the DLQ, redeliveries to the sink
//! (from its delivery journal) and how late the scheduler brought retried records back.
//!
//! A version that is neither applied nor dead-lettered but whose latest copy sits in a retry tier
//! and is due (plus `--due-grace`) after the audit's time can still arrive: it is counted as
//! waiting in that tier, not as lost. Only what can no longer arrive is lost. A version parked
//! behind an earlier version of its key (per-key order: its record is in the consumer's state
//! topic, waiting for that version to leave its tier) is counted as parked, not as lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rebound_kafka::{KafkaArgs, TopicScan, read_topic_to_end};
use rebound_retry::contract;
use rebound_schema::NoteCodec;
use rebound_service::{KeyOrderTopicArgs, SourceTopicArgs, TopologyArgs, parse_duration_flag};
use rebound_sink_store::{DeliveryJournalSummary, PostgresTlsArgs, SinkReader, SinkSpec};

/// Flags of `rebound audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// The consumer's sink: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    #[arg(long, env = "REBOUND_SINK", hide_env_values = true)]
    pub sink: String,

    /// TLS of a PostgreSQL sink, as the consumer's.
    #[command(flatten)]
    pub postgres_tls: PostgresTlsArgs,

    /// Log of acknowledged note versions, one `NOTE_ID<TAB>VERSION` line each (written by
    /// `rebound-producer --ids-log`).
    #[arg(long, env = "REBOUND_IDS_LOG")]
    pub ids_log: PathBuf,

    /// The tiers (only their names are used: versions waiting in them are not lost yet), the
    /// DLQ and the prefix of every topic name, shared with the services.
    #[command(flatten)]
    pub topology: TopologyArgs,

    /// The consumer's per-key order state topic: versions parked there are not lost.
    #[command(flatten)]
    pub key_order_topic: KeyOrderTopicArgs,

    /// How long past its due time a version whose latest copy sits in a tier is still expected
    /// back (the scheduler republishes it, the consumer applies it). Within it the version is
    /// waiting; after it, lost.
    #[arg(long, env = "REBOUND_AUDIT_DUE_GRACE", default_value = "30s", value_parser = parse_duration_flag)]
    pub due_grace: Duration,

    /// `text`: the accounting table; `json`: the report as one JSON object (schema in the
    /// README); `progress`: one line for watching a run, which never calls a version lost
    /// (the exit status still says whether every version is accounted for).
    #[arg(long, env = "REBOUND_OUTPUT", value_enum, default_value_t = AuditOutput::Text)]
    pub output: AuditOutput,

    /// Also report duplicates in the DLQ, redeliveries recorded by the sink's delivery journal
    /// (`rebound-consumer --sink-journal`), transient dead letters that skipped tiers, and the
    /// lateness of retried records, measured on the source topics.
    #[arg(long, env = "REBOUND_AUDIT_EXTENDED")]
    pub extended: bool,

    /// The source topics, whose republished records `--extended` measures.
    #[command(flatten)]
    pub sources: SourceTopicArgs,

    /// Processing attempts a transiently failing record gets before the DLQ: one plus the
    /// attempts of every tier (3 with the default tiers). With `--extended`, a transient dead
    /// letter with fewer attempts is reported as dead-lettered early.
    #[arg(long, env = "REBOUND_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
}

/// How `rebound audit` prints its report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditOutput {
    /// The accounting table, for people.
    #[default]
    Text,
    /// One JSON object, for scripts.
    Json,
    /// One line: what is applied, dead-lettered, waiting in tiers and still on its way.
    Progress,
}

/// One note version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NoteVersion {
    /// The note's id.
    pub note_id: String,
    /// Its version.
    pub version: i64,
}

/// Versions waiting in one tier: neither applied nor dead-lettered, their latest copy in this
/// tier, due (plus the grace) after the audit's time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TierWait {
    /// How many versions.
    pub versions: usize,
    /// The earliest due time among them, epoch ms.
    pub next_due_ms: i64,
    /// The latest due time among them, epoch ms.
    pub last_due_ms: i64,
}

/// The audit's figures. Serialized (without `extended`, which `to_json` adds) it is the
/// `--output json` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditReport {
    /// Note versions the producer had acknowledged.
    pub produced_versions: usize,
    /// Distinct notes among them.
    pub distinct_notes: usize,
    /// Versions applied, or superseded by a newer applied version.
    pub applied_or_superseded: usize,
    /// Versions found in the DLQ, by `retry.error.kind`.
    pub dead_lettered_by_kind: BTreeMap<String, usize>,
    /// DLQ records that are not notes at all (poison bytes), by kind.
    pub undecodable_dead_letters: usize,
    /// Stored notes whose latest version was applied on the first try.
    pub stored_first_try: usize,
    /// Stored notes whose latest version was applied after a tier, by tier.
    pub stored_after_tier: BTreeMap<String, usize>,
    /// Versions that can still arrive, by tier (configured name, without the prefix).
    pub waiting_in_tiers: BTreeMap<String, TierWait>,
    /// Versions parked behind an earlier version of their key waiting in a tier (per-key
    /// order), neither applied nor dead-lettered.
    #[serde(default)]
    pub parked_behind_key: usize,
    /// Versions neither applied, nor dead-lettered, nor waiting in a tier, nor parked.
    pub lost: usize,
    /// A few lost versions, for the error message.
    pub lost_examples: Vec<NoteVersion>,
    /// When the audit judged what is waiting, epoch ms.
    pub audited_at_ms: i64,
    /// The `--extended` figures, when asked for.
    #[serde(skip)]
    pub extended: Option<ExtendedFigures>,
}

/// Figures of `rebound audit --extended`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendedFigures {
    /// Decodable records in the DLQ.
    pub dead_letter_records: usize,
    /// Note versions dead-lettered more than once.
    pub dead_letter_duplicate_versions: usize,
    /// Dead letters beyond the first of each note version.
    pub dead_letter_extra_copies: usize,
    /// Dead letters beyond the first of one source record (`retry.original.*`): a hop written
    /// twice. Unlike a version dead-lettered twice, which a client that sent one version twice
    /// also causes, this is zero with exactly-once delivery.
    pub dead_letter_duplicate_hops: usize,
    /// Tier copies beyond the first of one source record at one attempt: a hop written twice.
    pub tier_duplicate_hops: usize,
    /// Transient dead letters with fewer attempts than the tiers allow: routed to the DLQ while
    /// a tier should still have taken them.
    pub transient_dead_letters_early: usize,
    /// The sink's delivery journal, if the consumer kept one.
    pub sink_deliveries: Option<DeliveryJournalSummary>,
    /// Produced versions counted as applied only because a newer version of their note was:
    /// neither in the DLQ nor in the delivery journal, and not lost (`None` without a journal).
    pub never_delivered: Option<usize>,
    /// Lateness of the records the scheduler republished.
    pub lateness: LatenessSummary,
}

/// How late retried records came back: for every record on a source topic that carries
/// `retry.due.timestamp`, its Kafka timestamp (set when the scheduler produced it) minus that
/// due time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LatenessSummary {
    /// Republished records found on the source topics.
    pub republished: usize,
    /// Republished copies beyond the first of one note version at one attempt.
    pub duplicate_republishes: usize,
    /// Republished copies beyond the first of one source record at one attempt (by
    /// `retry.original.*`): a release written twice, zero with exactly-once delivery.
    pub duplicate_republish_hops: usize,
    /// Smallest lateness in ms (negative: republished before it was due).
    pub min_ms: Option<i64>,
    /// Median lateness in ms.
    pub p50_ms: Option<i64>,
    /// 99th percentile of lateness in ms.
    pub p99_ms: Option<i64>,
    /// Largest lateness in ms.
    pub max_ms: Option<i64>,
}

impl LatenessSummary {
    /// Summarises lateness samples in ms (nearest-rank percentiles).
    pub fn from_samples(mut samples: Vec<i64>, duplicate_republishes: usize) -> Self {
        samples.sort_unstable();
        let rank = |percent: usize| -> Option<i64> {
            if samples.is_empty() {
                return None;
            }
            // Nearest rank: the smallest sample with at least `percent` % of samples at or below it.
            let index = (samples.len() * percent).div_ceil(100).max(1) - 1;
            samples.get(index).copied()
        };
        Self {
            republished: samples.len(),
            duplicate_republishes,
            duplicate_republish_hops: 0,
            min_ms: samples.first().copied(),
            p50_ms: rank(50),
            p99_ms: rank(99),
            max_ms: samples.last().copied(),
        }
    }
}

impl AuditReport {
    /// Versions waiting in tiers, all tiers together.
    pub fn waiting(&self) -> usize {
        self.waiting_in_tiers.values().map(|wait| wait.versions).sum()
    }

    /// Every version is applied or dead-lettered: nothing lost, nothing still waiting.
    pub fn settled(&self) -> bool {
        self.lost == 0 && self.waiting() == 0 && self.parked_behind_key == 0
    }

    /// Versions dead-lettered, all kinds together.
    pub fn dead_lettered(&self) -> usize {
        self.dead_lettered_by_kind.values().sum()
    }

    /// The `--output json` object: every field of the report, `settled`, and `extended` (null
    /// without `--extended`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("settled".to_owned(), self.settled().into());
            object.insert(
                "extended".to_owned(),
                self.extended
                    .as_ref()
                    .map_or(serde_json::Value::Null, ExtendedFigures::to_json),
            );
        }
        value
    }
}

impl ExtendedFigures {
    fn to_json(&self) -> serde_json::Value {
        let journal = self.sink_deliveries.map(|journal| {
            serde_json::json!({
                "deliveries": journal.deliveries,
                "distinct_versions": journal.distinct_versions,
                "redelivered_versions": journal.redelivered_versions,
                "extra_deliveries": journal.extra_deliveries,
                "max_deliveries_of_one_version": journal.max_deliveries_of_one_version,
                "changed_rows": journal.changed_rows,
            })
        });
        serde_json::json!({
            "dead_letter_records": self.dead_letter_records,
            "dead_letter_duplicate_versions": self.dead_letter_duplicate_versions,
            "dead_letter_extra_copies": self.dead_letter_extra_copies,
            "dead_letter_duplicate_hops": self.dead_letter_duplicate_hops,
            "tier_duplicate_hops": self.tier_duplicate_hops,
            "transient_dead_letters_early": self.transient_dead_letters_early,
            "sink_deliveries": journal,
            "never_delivered": self.never_delivered,
            "lateness": self.lateness,
        })
    }
}

/// Keys seen more than once, and the occurrences beyond the first of each.
fn duplicates<K: std::hash::Hash + Eq>(keys: impl IntoIterator<Item = K>) -> (usize, usize) {
    let mut counts: HashMap<K, usize> = HashMap::new();
    for key in keys {
        *counts.entry(key).or_default() += 1;
    }
    counts
        .values()
        .filter(|count| **count > 1)
        .fold((0, 0), |(keys, extra), count| (keys + 1, extra + count - 1))
}

fn milliseconds(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"))
}

impl AuditReport {
    /// The report as an aligned text table.
    pub fn render_table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |label: String, value: String| rows.push((label, value));
        row(
            "note versions produced (acknowledged)".to_owned(),
            self.produced_versions.to_string(),
        );
        row("distinct notes".to_owned(), self.distinct_notes.to_string());
        row(
            "latest version applied on first try".to_owned(),
            self.stored_first_try.to_string(),
        );
        for (tier, count) in &self.stored_after_tier {
            row(format!("latest version applied after {tier}"), count.to_string());
        }
        row(
            "versions applied or superseded".to_owned(),
            self.applied_or_superseded.to_string(),
        );
        for (kind, count) in &self.dead_lettered_by_kind {
            row(format!("versions in dlq ({kind})"), count.to_string());
        }
        row(
            "undecodable records in dlq".to_owned(),
            self.undecodable_dead_letters.to_string(),
        );
        for (tier, wait) in &self.waiting_in_tiers {
            row(format!("versions waiting in {tier}"), wait.versions.to_string());
        }
        if self.parked_behind_key > 0 {
            row(
                "versions parked behind their key".to_owned(),
                self.parked_behind_key.to_string(),
            );
        }
        row("lost".to_owned(), self.lost.to_string());
        if let Some(extended) = &self.extended {
            row("dlq records".to_owned(), extended.dead_letter_records.to_string());
            row(
                "dlq duplicate versions".to_owned(),
                extended.dead_letter_duplicate_versions.to_string(),
            );
            row(
                "dlq extra copies".to_owned(),
                extended.dead_letter_extra_copies.to_string(),
            );
            row(
                "dlq duplicate hops".to_owned(),
                extended.dead_letter_duplicate_hops.to_string(),
            );
            row(
                "tier duplicate hops".to_owned(),
                extended.tier_duplicate_hops.to_string(),
            );
            row(
                "dlq transient before tiers used up".to_owned(),
                extended.transient_dead_letters_early.to_string(),
            );
            match &extended.sink_deliveries {
                Some(journal) => {
                    row("sink deliveries".to_owned(), journal.deliveries.to_string());
                    row(
                        "sink redelivered versions".to_owned(),
                        journal.redelivered_versions.to_string(),
                    );
                    row("sink extra deliveries".to_owned(), journal.extra_deliveries.to_string());
                    row(
                        "sink max deliveries of one version".to_owned(),
                        journal.max_deliveries_of_one_version.to_string(),
                    );
                }
                None => row("sink deliveries".to_owned(), "no journal".to_owned()),
            }
            row(
                "versions never delivered (only superseded)".to_owned(),
                extended
                    .never_delivered
                    .map_or_else(|| "no journal".to_owned(), |count| count.to_string()),
            );
            let lateness = &extended.lateness;
            row("retries republished".to_owned(), lateness.republished.to_string());
            row(
                "retries republished twice or more".to_owned(),
                lateness.duplicate_republishes.to_string(),
            );
            row(
                "republish duplicate hops".to_owned(),
                lateness.duplicate_republish_hops.to_string(),
            );
            row("retry lateness min".to_owned(), milliseconds(lateness.min_ms));
            row("retry lateness p50".to_owned(), milliseconds(lateness.p50_ms));
            row("retry lateness p99".to_owned(), milliseconds(lateness.p99_ms));
            row("retry lateness max".to_owned(), milliseconds(lateness.max_ms));
        }
        let width = rows.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0);
        let mut table = String::new();
        for (label, value) in rows {
            let _ = writeln!(table, "  {label:<width$}  {value:>9}");
        }
        table
    }
}

/// Runs the audit.
pub async fn audit(kafka: &KafkaArgs, args: &AuditArgs) -> anyhow::Result<AuditReport> {
    let Some(sink) = SinkReader::for_spec(&args.sink.parse::<SinkSpec>()?, &args.postgres_tls) else {
        anyhow::bail!(
            "invalid --sink {}: the audit reads a sqlite:// or postgres:// sink",
            rebound_service::redact::redact_url(&args.sink)
        );
    };
    let ids_log = std::fs::read_to_string(&args.ids_log)
        .with_context(|| format!("failed to read ids log {}", args.ids_log.display()))?;
    let mut produced: Vec<(String, i64)> = Vec::new();
    for (number, line) in ids_log.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let (note_id, version) = line
            .split_once('\t')
            .with_context(|| format!("ids log line {}: expected NOTE_ID<TAB>VERSION", number + 1))?;
        let version: i64 = version
            .trim()
            .parse()
            .with_context(|| format!("ids log line {}: version {version:?} is not a number", number + 1))?;
        produced.push((note_id.to_owned(), version));
    }

    let rows = sink.read_all_notes().await?;
    let stored: HashMap<&str, i64> = rows.iter().map(|row| (row.note_id.as_str(), row.version)).collect();
    let mut report = AuditReport {
        produced_versions: produced.len(),
        distinct_notes: produced.iter().map(|(id, _)| id.as_str()).collect::<HashSet<_>>().len(),
        ..AuditReport::default()
    };
    for row in &rows {
        match &row.applied_tier {
            None => report.stored_first_try += 1,
            Some(tier) => {
                // Tiers are reported by their configured name, without the deployment's prefix.
                let name = tier
                    .strip_prefix(args.topology.naming.topic_prefix.as_str())
                    .unwrap_or(tier);
                *report.stored_after_tier.entry(name.to_owned()).or_default() += 1;
            }
        }
    }

    let dlq_topic = args.topology.naming.dlq();
    let dead_letters = read_topic_to_end(kafka, &dlq_topic, Duration::from_secs(120)).await?;
    let codec = NoteCodec::embedded();
    let mut in_dlq: HashMap<(String, i64), String> = HashMap::new();
    let mut dead_letter_versions: Vec<(String, i64)> = Vec::new();
    let mut dead_letter_hops: Vec<HopKey> = Vec::new();
    let mut transient_early = 0;
    for record in &dead_letters {
        if args.extended {
            dead_letter_hops.extend(hop_key(&record.headers, false));
        }
        let kind = record
            .headers
            .get_str(contract::ERROR_KIND)
            .unwrap_or("unknown")
            .to_owned();
        match record.value.as_deref().map(|value| codec.decode(value)) {
            Some(Ok(note)) => {
                let attempts = record
                    .headers
                    .get_str(contract::ATTEMPT)
                    .and_then(|attempt| attempt.parse::<u32>().ok())
                    .unwrap_or(0);
                if kind == "transient" && attempts < args.max_attempts {
                    transient_early += 1;
                }
                if args.extended {
                    dead_letter_versions.push((note.note_id.clone(), note.version));
                }
                in_dlq.insert((note.note_id, note.version), kind);
            }
            _ => report.undecodable_dead_letters += 1,
        }
    }
    // Read after the sink and the DLQ: a version applied or dead-lettered in between is then
    // still found waiting rather than lost.
    let (in_tiers, tier_hops) = read_tier_copies(kafka, args, codec).await?;
    let parked = read_parked_versions(kafka, args, codec).await?;
    report.audited_at_ms = epoch_ms_now();
    let grace_ms = i64::try_from(args.due_grace.as_millis()).unwrap_or(i64::MAX);
    for (note_id, version) in &produced {
        let key = (note_id.clone(), *version);
        if let Some(kind) = in_dlq.get(&key) {
            *report.dead_lettered_by_kind.entry(kind.clone()).or_default() += 1;
        } else if stored
            .get(note_id.as_str())
            .is_some_and(|stored_version| stored_version >= version)
        {
            report.applied_or_superseded += 1;
        } else if let Some(copy) = in_tiers
            .get(&key)
            .filter(|copy| copy.due_ms.saturating_add(grace_ms) > report.audited_at_ms)
        {
            let wait = report.waiting_in_tiers.entry(copy.tier.clone()).or_insert(TierWait {
                versions: 0,
                next_due_ms: copy.due_ms,
                last_due_ms: copy.due_ms,
            });
            wait.versions += 1;
            wait.next_due_ms = wait.next_due_ms.min(copy.due_ms);
            wait.last_due_ms = wait.last_due_ms.max(copy.due_ms);
        } else if parked.contains(&key) {
            report.parked_behind_key += 1;
        } else {
            report.lost += 1;
            if report.lost_examples.len() < 10 {
                report.lost_examples.push(NoteVersion {
                    note_id: note_id.clone(),
                    version: *version,
                });
            }
        }
    }
    if args.extended {
        let dead_letter_records = dead_letter_versions.len();
        let (dead_letter_duplicate_versions, dead_letter_extra_copies) = duplicates(dead_letter_versions);
        let (_, dead_letter_duplicate_hops) = duplicates(dead_letter_hops);
        let (_, tier_duplicate_hops) = duplicates(tier_hops);
        // The journal shows which versions reached the sink at all; a version neither there nor
        // in the DLQ, and not lost, passed the check above only because a newer version was
        // applied.
        let never_delivered = sink.read_delivered_versions().await?.map(|delivered| {
            produced
                .iter()
                .collect::<HashSet<_>>()
                .into_iter()
                .filter(|version| {
                    !in_dlq.contains_key(*version)
                        && !delivered.contains(*version)
                        && stored
                            .get(version.0.as_str())
                            .is_some_and(|stored_version| *stored_version >= version.1)
                })
                .count()
        });
        report.extended = Some(ExtendedFigures {
            dead_letter_records,
            dead_letter_duplicate_versions,
            dead_letter_extra_copies,
            dead_letter_duplicate_hops,
            tier_duplicate_hops,
            transient_dead_letters_early: transient_early,
            sink_deliveries: sink.read_delivery_journal().await?,
            never_delivered,
            lateness: measure_lateness(kafka, args, codec).await?,
        });
    }
    Ok(report)
}

fn epoch_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// A note version's latest copy in a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TierCopy {
    /// The tier's configured name, without the prefix.
    tier: String,
    /// Its `retry.attempt`.
    attempt: u32,
    /// Its `retry.due.timestamp`, epoch ms.
    due_ms: i64,
}

/// One hop of one source record: `retry.original.topic`, `.partition`, `.offset`, and the
/// attempt for a tier copy (a record visits the tiers once per attempt, the DLQ once).
type HopKey = (String, String, String, String);

/// The hop a copy's headers name, if they carry its source position.
fn hop_key(headers: &rebound_retry::RecordHeaders, with_attempt: bool) -> Option<HopKey> {
    let value = |key| headers.get_str(key).map(str::to_owned);
    let attempt = if with_attempt {
        value(contract::ATTEMPT)?
    } else {
        String::new()
    };
    Some((
        value(contract::ORIGINAL_TOPIC)?,
        value(contract::ORIGINAL_PARTITION)?,
        value(contract::ORIGINAL_OFFSET)?,
        attempt,
    ))
}

/// The note versions parked in the consumer's per-key order state topic now: live entries
/// (`parked/...` keys whose latest record is not a tombstone) whose value is a note.
async fn read_parked_versions(
    kafka: &KafkaArgs,
    args: &AuditArgs,
    codec: &NoteCodec,
) -> anyhow::Result<HashSet<(String, i64)>> {
    let topic = args
        .key_order_topic
        .prefixed(&args.topology.naming)
        .map_err(|error| anyhow::anyhow!("invalid {}: {}", error.flag, error.reason))?;
    let mut latest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    if let Some(mut scan) = TopicScan::open_if_exists(kafka, &topic, Duration::from_secs(60)).await? {
        while let Some(batch) = scan.next_batch().await? {
            for record in batch {
                if let Some(key) = record.key {
                    latest.insert(key, record.value);
                }
            }
        }
    }
    Ok(latest
        .into_iter()
        .filter(|(key, _)| {
            matches!(
                rebound_retry::parse_state_entry_key(key),
                Ok(rebound_retry::StateEntryKey::Parked { .. })
            )
        })
        .filter_map(|(_, value)| {
            let note = codec.decode(&value?).ok()?;
            Some((note.note_id, note.version))
        })
        .collect())
}

/// Reads every tier topic and keeps, per note version, the copy with the most attempts (the
/// latest hop; ties go to the later due time), and every copy's hop. A tier topic that does not
/// exist holds nothing; a record that is no note or has no due time is skipped (the scheduler
/// dead-letters it).
async fn read_tier_copies(
    kafka: &KafkaArgs,
    args: &AuditArgs,
    codec: &NoteCodec,
) -> anyhow::Result<(HashMap<(String, i64), TierCopy>, Vec<HopKey>)> {
    let mut latest: HashMap<(String, i64), TierCopy> = HashMap::new();
    let mut hops = Vec::new();
    for tier in args.topology.tier_names() {
        let topic = args.topology.naming.prefixed(&tier);
        let Some(mut scan) = TopicScan::open_if_exists(kafka, &topic, Duration::from_secs(60)).await? else {
            continue;
        };
        while let Some(batch) = scan.next_batch().await? {
            for record in batch {
                hops.extend(hop_key(&record.headers, true));
                let Some(due_ms) = record
                    .headers
                    .get_str(contract::DUE_TIMESTAMP)
                    .and_then(|due| due.parse::<i64>().ok())
                else {
                    continue;
                };
                let Some(Ok(note)) = record.value.as_deref().map(|value| codec.decode(value)) else {
                    continue;
                };
                let attempt = record
                    .headers
                    .get_str(contract::ATTEMPT)
                    .and_then(|attempt| attempt.parse::<u32>().ok())
                    .unwrap_or(0);
                let copy = TierCopy {
                    tier: tier.clone(),
                    attempt,
                    due_ms,
                };
                latest
                    .entry((note.note_id, note.version))
                    .and_modify(|kept| {
                        if (copy.attempt, copy.due_ms) > (kept.attempt, kept.due_ms) {
                            *kept = copy.clone();
                        }
                    })
                    .or_insert(copy);
            }
        }
    }
    Ok((latest, hops))
}

/// Scans the source topics for republished records (those carrying `retry.due.timestamp`) and
/// takes each one's Kafka timestamp minus its due time. The scheduler republishes a record with
/// its headers unchanged and lets the client stamp the produce time, so this measures when the
/// copy was actually sent, including the time a killed or revoked scheduler's successor needed
/// to read it again, which the scheduler's own metrics cannot see.
async fn measure_lateness(kafka: &KafkaArgs, args: &AuditArgs, codec: &NoteCodec) -> anyhow::Result<LatenessSummary> {
    let mut samples = Vec::new();
    let mut republished_versions: Vec<(String, i64, String)> = Vec::new();
    let mut republished_hops: Vec<HopKey> = Vec::new();
    for topic in &args.sources.source_topics {
        let topic = args.topology.naming.prefixed(topic);
        let Some(mut scan) = TopicScan::open_if_exists(kafka, &topic, Duration::from_secs(60)).await? else {
            anyhow::bail!("source topic {topic} does not exist");
        };
        while let Some(batch) = scan.next_batch().await? {
            for record in batch {
                let (Some(due_ms), Some(timestamp_ms)) = (
                    record
                        .headers
                        .get_str(contract::DUE_TIMESTAMP)
                        .and_then(|due| due.parse::<i64>().ok()),
                    record.timestamp_ms,
                ) else {
                    continue;
                };
                samples.push(timestamp_ms - due_ms);
                republished_hops.extend(hop_key(&record.headers, true));
                if let Some(Ok(note)) = record.value.as_deref().map(|value| codec.decode(value)) {
                    let attempt = record.headers.get_str(contract::ATTEMPT).unwrap_or("").to_owned();
                    republished_versions.push((note.note_id, note.version, attempt));
                }
            }
        }
    }
    let (duplicate_republishes, _) = duplicates(republished_versions);
    let (_, duplicate_republish_hops) = duplicates(republished_hops);
    Ok(LatenessSummary {
        duplicate_republish_hops,
        ..LatenessSummary::from_samples(samples, duplicate_republishes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> AuditReport {
        AuditReport {
            produced_versions: 1000,
            distinct_notes: 10,
            applied_or_superseded: 990,
            dead_lettered_by_kind: BTreeMap::from([("permanent".to_owned(), 10)]),
            stored_first_try: 8,
            stored_after_tier: BTreeMap::from([("retry-5s".to_owned(), 2)]),
            ..AuditReport::default()
        }
    }

    #[test]
    fn the_plain_table_is_unchanged_and_ends_with_lost() {
        let table = report().render_table();
        // Each row: two spaces, the label padded to the widest, two spaces, the value in nine.
        let expected = [
            "  note versions produced (acknowledged)       1000",
            "  distinct notes                                10",
            "  latest version applied on first try            8",
            "  latest version applied after retry-5s          2",
            "  versions applied or superseded               990",
            "  versions in dlq (permanent)                   10",
            "  undecodable records in dlq                     0",
            "  lost                                           0",
        ]
        .map(|line| format!("{line}\n"))
        .concat();
        assert_eq!(table, expected);
    }

    #[test]
    fn the_extended_table_adds_rows_after_lost() {
        let mut report = report();
        report.extended = Some(ExtendedFigures {
            dead_letter_records: 12,
            dead_letter_duplicate_versions: 2,
            dead_letter_extra_copies: 2,
            dead_letter_duplicate_hops: 0,
            tier_duplicate_hops: 1,
            transient_dead_letters_early: 0,
            sink_deliveries: Some(DeliveryJournalSummary {
                deliveries: 1005,
                distinct_versions: 990,
                redelivered_versions: 5,
                extra_deliveries: 15,
                max_deliveries_of_one_version: 4,
                changed_rows: 900,
            }),
            never_delivered: Some(0),
            lateness: LatenessSummary::from_samples(vec![5, 1, 250], 1),
        });
        let table = report.render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 8 + 18);
        let row = |label: &str| {
            lines
                .iter()
                .find(|line| line.trim_start().starts_with(label))
                .map(|line| line[line.find(label).unwrap_or(0) + label.len()..].trim().to_owned())
        };
        assert_eq!(row("lost").as_deref(), Some("0"));
        assert_eq!(row("dlq duplicate versions").as_deref(), Some("2"));
        assert_eq!(row("dlq duplicate hops").as_deref(), Some("0"));
        assert_eq!(row("tier duplicate hops").as_deref(), Some("1"));
        assert_eq!(row("sink extra deliveries").as_deref(), Some("15"));
        assert_eq!(row("versions never delivered (only superseded)").as_deref(), Some("0"));
        assert_eq!(row("retries republished twice or more").as_deref(), Some("1"));
        assert_eq!(row("retry lateness max").as_deref(), Some("250 ms"));
        assert_eq!(row("retry lateness min").as_deref(), Some("1 ms"));
        // Values stay in one right-aligned column.
        let ends: HashSet<usize> = lines.iter().map(|line| line.chars().count()).collect();
        assert_eq!(ends.len(), 1, "{table}");
    }

    #[test]
    fn a_missing_journal_and_no_retries_are_shown_as_such() {
        let mut report = report();
        report.extended = Some(ExtendedFigures::default());
        let table = report.render_table();
        assert!(
            table.contains("sink deliveries") && table.contains("no journal"),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|line| line.starts_with("  retry lateness max") && line.ends_with(" -"))
        );
    }

    #[test]
    fn lateness_percentiles_are_nearest_rank() {
        let samples: Vec<i64> = (1..=200).rev().collect();
        let summary = LatenessSummary::from_samples(samples, 3);
        assert_eq!(summary.republished, 200);
        assert_eq!(summary.duplicate_republishes, 3);
        assert_eq!(summary.min_ms, Some(1));
        assert_eq!(summary.p50_ms, Some(100));
        assert_eq!(summary.p99_ms, Some(198));
        assert_eq!(summary.max_ms, Some(200));
        assert_eq!(LatenessSummary::from_samples(vec![-3], 0).p99_ms, Some(-3));
        assert_eq!(LatenessSummary::from_samples(Vec::new(), 0), LatenessSummary::default());
    }

    #[test]
    fn duplicates_count_keys_and_extra_occurrences() {
        assert_eq!(duplicates(["a", "b", "a", "c", "a", "b"]), (2, 3));
        assert_eq!(duplicates(Vec::<&str>::new()), (0, 0));
    }
}
