//! `rebound dlq inspect`: the dead letters the filters select, with every header, the error
//! story and the decoded note (hex for poison), streamed as they are read.

use rebound_kafka::KafkaArgs;

use super::letter::DeadLetter;
use super::{DlqFilterArgs, DlqTopicArgs, OutputFormat, open_dlq, resolve_filter};

/// Flags of `rebound dlq inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqInspectArgs {
    /// Topics and broker timeout.
    #[command(flatten)]
    pub topics: DlqTopicArgs,

    /// Which dead letters to list.
    #[command(flatten)]
    pub filter: DlqFilterArgs,

    /// List at most this many dead letters.
    #[arg(long, env = "REBOUND_DLQ_LIMIT", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// `text` for people, or `json`: one JSON object per line, for scripts.
    #[arg(long, env = "REBOUND_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Schema registry, to decode Confluent-framed dead letters (their schema id is shown
    /// without it).
    #[command(flatten)]
    pub registry: Box<rebound_registry::RegistryArgs>,
}

/// Calls `emit` with each selected dead letter, in offset order within each partition, and
/// returns how many there were. Stops reading at `--limit`.
pub async fn inspect_dead_letters(
    kafka: &KafkaArgs,
    args: &DlqInspectArgs,
    now_ms: i64,
    mut emit: impl FnMut(&DeadLetter),
) -> anyhow::Result<u64> {
    let filter = resolve_filter(&args.filter, &args.topics, now_ms)?;
    let (mut scan, ledger) = open_dlq(kafka, &args.topics).await?;
    let mut listed = 0;
    while let Some(batch) = scan.next_batch().await? {
        for record in batch {
            let replayed = ledger.contains(record.partition, record.offset);
            let letter = DeadLetter::new(record, replayed);
            if !filter.matches(&letter) {
                continue;
            }
            emit(&letter);
            listed += 1;
            if args.limit.is_some_and(|limit| listed >= limit) {
                return Ok(listed);
            }
        }
    }
    Ok(listed)
}
