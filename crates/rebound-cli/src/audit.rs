//! `rebound audit`: accounts for every note version a producer reported as acknowledged. Each
//! version must be applied in the SQLite sink (the stored version is at least it) or sit in the
//! DLQ; anything else is lost. Also tallies how the stored versions got there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rebound_consumer::sink::{SinkSpec, SqliteSink};
use rebound_kafka::{KafkaArgs, read_topic_to_end};
use rebound_retry::{apply_topic_prefix, contract};
use rebound_schema::NoteCodec;

/// Flags of `rebound audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// The consumer's SQLite sink, `sqlite://PATH`.
    #[arg(long, env = "REBOUND_SINK", hide_env_values = true)]
    pub sink: String,

    /// Log of acknowledged note versions, one `NOTE_ID<TAB>VERSION` line each (written by
    /// `rebound-producer --ids-log`).
    #[arg(long, env = "REBOUND_IDS_LOG")]
    pub ids_log: PathBuf,

    /// Dead-letter topic.
    #[arg(long, env = "REBOUND_DLQ_TOPIC", default_value = "dlq")]
    pub dlq_topic: String,

    /// Prefix applied to the DLQ topic name.
    #[arg(long, env = "REBOUND_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
}

/// The audit's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Versions neither applied nor dead-lettered.
    pub lost: usize,
    /// A few lost versions, for the error message.
    pub lost_examples: Vec<(String, i64)>,
}

impl AuditReport {
    /// The report as an aligned text table.
    pub fn render_table(&self) -> String {
        let mut rows: Vec<(String, usize)> = vec![
            (
                "note versions produced (acknowledged)".to_owned(),
                self.produced_versions,
            ),
            ("distinct notes".to_owned(), self.distinct_notes),
            ("latest version applied on first try".to_owned(), self.stored_first_try),
        ];
        for (tier, count) in &self.stored_after_tier {
            rows.push((format!("latest version applied after {tier}"), *count));
        }
        rows.push(("versions applied or superseded".to_owned(), self.applied_or_superseded));
        for (kind, count) in &self.dead_lettered_by_kind {
            rows.push((format!("versions in dlq ({kind})"), *count));
        }
        rows.push(("undecodable records in dlq".to_owned(), self.undecodable_dead_letters));
        rows.push(("lost".to_owned(), self.lost));
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
    let SinkSpec::Sqlite(path) = args.sink.parse::<SinkSpec>()? else {
        anyhow::bail!(
            "invalid --sink {}: the audit reads a sqlite:// sink",
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

    let rows = SqliteSink::read_all(&path)?;
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
                let name = tier.strip_prefix(args.topic_prefix.as_str()).unwrap_or(tier);
                *report.stored_after_tier.entry(name.to_owned()).or_default() += 1;
            }
        }
    }

    let dlq_topic = apply_topic_prefix(&args.topic_prefix, &args.dlq_topic);
    let dead_letters = read_topic_to_end(kafka, &dlq_topic, Duration::from_secs(120)).await?;
    let codec = NoteCodec::embedded();
    let mut in_dlq: HashMap<(String, i64), String> = HashMap::new();
    for record in &dead_letters {
        let kind = record
            .headers
            .get_str(contract::ERROR_KIND)
            .unwrap_or("unknown")
            .to_owned();
        match record.value.as_deref().map(|value| codec.decode(value)) {
            Some(Ok(note)) => {
                in_dlq.insert((note.note_id, note.version), kind);
            }
            _ => report.undecodable_dead_letters += 1,
        }
    }
    for (note_id, version) in &produced {
        if let Some(kind) = in_dlq.get(&(note_id.clone(), *version)) {
            *report.dead_lettered_by_kind.entry(kind.clone()).or_default() += 1;
        } else if stored
            .get(note_id.as_str())
            .is_some_and(|stored_version| stored_version >= version)
        {
            report.applied_or_superseded += 1;
        } else {
            report.lost += 1;
            if report.lost_examples.len() < 10 {
                report.lost_examples.push((note_id.clone(), *version));
            }
        }
    }
    Ok(report)
}
