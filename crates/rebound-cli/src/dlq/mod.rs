//! `rebound dlq`: see why records were dead-lettered (`stats`, `inspect`) and send them back
//! once the cause is fixed (`replay`, a redrive). `docs/dlq.md` is the user guide and runbook.
//!
//! Each command is a library function returning data; [`run_dlq_command`] prints it and maps
//! the outcome to the exit code.

mod filter;
mod inspect;
mod letter;
mod replay;
mod stats;
mod watch;

use std::io::IsTerminal as _;

use anyhow::Context as _;
pub use filter::{DlqFilter, DlqFilterArgs};
pub use inspect::{DlqInspectArgs, inspect_dead_letters};
pub use letter::DeadLetter;
use rebound_kafka::{KafkaArgs, TopicScan, read_replay_ledger};
use rebound_retry::ReplayLedger;
use rebound_schema::NoteCodec;
use rebound_service::TopicNamingArgs;
pub use replay::{DlqReplayArgs, Rate, RefusedDeadLetter, ReplayEvent, ReplayReport, replay_dead_letters};
use serde_json::json;
pub use stats::{DlqStats, DlqStatsArgs, StatsGroup, dlq_stats};
pub use watch::{DlqWatchArgs, watch_dead_letters};

/// `rebound dlq …`
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Depth, oldest and newest age, and counts by original topic, error kind and error
    /// fingerprint.
    Stats(DlqStatsArgs),
    /// List dead letters with their headers and decoded notes (hex for poison).
    Inspect(DlqInspectArgs),
    /// Send dead letters back to their original topic (redrive), each at most once across runs.
    Replay(DlqReplayArgs),
    /// Keep watching the backlog: export it as metrics, and notify a Slack-compatible webhook
    /// when it crosses a threshold and when it recovers.
    Watch(DlqWatchArgs),
}

/// Where the DLQ and its replay ledger are, shared by every `dlq` command.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqTopicArgs {
    /// The DLQ and the prefix applied to every topic name: the DLQ, the ledger,
    /// --original-topic and --to. Shared with the services.
    #[command(flatten)]
    pub naming: TopicNamingArgs,

    /// Topic recording which dead letters were replayed; created by the first replay.
    /// Default: the DLQ's name followed by `.replayed`.
    #[arg(long, env = "REBOUND_DLQ_LEDGER_TOPIC")]
    pub ledger_topic: Option<String>,

    /// The broker wait.
    #[command(flatten)]
    pub broker_wait: crate::BrokerWaitArgs,
}

impl DlqTopicArgs {
    /// The DLQ's full name.
    pub fn dlq(&self) -> String {
        self.naming.dlq()
    }

    /// The ledger's full name.
    pub fn ledger(&self) -> String {
        match &self.ledger_topic {
            Some(ledger) => self.naming.prefixed(ledger),
            None => format!("{}.replayed", self.dlq()),
        }
    }
}

/// How results are printed: one definition for every command, shared with the producer.
pub use rebound_service::OutputFormat;

/// A flag value that is wrong in a way only visible once flags are combined (an empty time
/// range, `--to` naming the DLQ). Reported like clap's own errors, with exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn resolve_filter(args: &DlqFilterArgs, topics: &DlqTopicArgs, now_ms: i64) -> anyhow::Result<DlqFilter> {
    DlqFilter::new(args, &topics.naming.topic_prefix, now_ms).map_err(|reason| UsageError(reason).into())
}

/// Opens a scan of the DLQ, with an error that names the topic and the brokers.
pub(crate) async fn open_dlq_scan(kafka: &KafkaArgs, topics: &DlqTopicArgs) -> anyhow::Result<TopicScan> {
    let dlq = topics.dlq();
    TopicScan::open_if_exists(kafka, &dlq, topics.broker_wait.timeout)
        .await
        .with_context(|| format!("cannot read dead-letter topic {dlq} on brokers {}", kafka.brokers()))?
        .with_context(|| {
            format!(
                "dead-letter topic {dlq} does not exist on brokers {} (check --dlq-topic and --topic-prefix; \
                 `rebound topics create` creates the pipeline's topics)",
                kafka.brokers()
            )
        })
}

/// Reads the replay ledger of the DLQ; one that does not exist yet is empty.
pub(crate) async fn read_ledger(kafka: &KafkaArgs, topics: &DlqTopicArgs) -> anyhow::Result<ReplayLedger> {
    let ledger = topics.ledger();
    read_replay_ledger(kafka, &ledger, &topics.dlq(), topics.broker_wait.timeout)
        .await
        .with_context(|| format!("cannot read the replay ledger {ledger} on brokers {}", kafka.brokers()))
}

pub(crate) async fn open_dlq(kafka: &KafkaArgs, topics: &DlqTopicArgs) -> anyhow::Result<(TopicScan, ReplayLedger)> {
    let scan = open_dlq_scan(kafka, topics).await?;
    let ledger = read_ledger(kafka, topics).await?;
    Ok((scan, ledger))
}

/// Runs one `dlq` command, printing its results on stdout. Usage errors exit the process with
/// code 2, as clap's do; other failures are returned (exit code 1), as is a replay that left
/// selected dead letters unreplayed.
pub async fn run_dlq_command(kafka: &KafkaArgs, command: DlqCommand) -> anyhow::Result<()> {
    let outcome = match command {
        DlqCommand::Stats(args) => print_stats(kafka, &args).await,
        DlqCommand::Inspect(args) => print_inspect(kafka, &args).await,
        DlqCommand::Replay(args) => print_replay(kafka, &args).await,
        DlqCommand::Watch(args) => {
            let shutdown = rebound_service::Shutdown::new().triggered_by(rebound_service::shutdown_signal());
            watch_dead_letters(kafka, &args, shutdown).await
        }
    };
    // A `UsageError` comes back as it is: the binary, not the library, turns it into exit code 2.
    outcome
}

async fn print_stats(kafka: &KafkaArgs, args: &DlqStatsArgs) -> anyhow::Result<()> {
    let stats = dlq_stats(kafka, args, rebound_service::now_epoch_ms()).await?;
    match args.output {
        OutputFormat::Text => print!("{}", stats.render_table()),
        OutputFormat::Json => println!("{}", serde_json::to_string(&stats)?),
    }
    Ok(())
}

async fn print_inspect(kafka: &KafkaArgs, args: &DlqInspectArgs) -> anyhow::Result<()> {
    let registry = (*args.registry)
        .clone()
        .into_config()?
        .map(|config| rebound_registry::RegistryClient::new(&config))
        .transpose()?;
    let codec = RegistryNoteReader(rebound_registry::NoteDecoder::new(NoteCodec::embedded(), registry));
    let codec = &codec;
    let output = args.output;
    let listed = inspect_dead_letters(kafka, args, rebound_service::now_epoch_ms(), |letter| match output {
        OutputFormat::Text => println!("{}", letter.render_text(codec)),
        OutputFormat::Json => println!("{}", letter.to_json(codec)),
    })
    .await?;
    if output == OutputFormat::Text {
        println!("{listed} dead letters listed");
    }
    Ok(())
}

/// Both wire formats for `inspect`: a Confluent-framed value's writer schema is fetched from
/// the registry (once per id), when `--schema-registry-url` is given.
struct RegistryNoteReader(rebound_registry::NoteDecoder);

impl letter::ReadNote for RegistryNoteReader {
    fn read_note(&self, value: &[u8]) -> Result<rebound_schema::Note, String> {
        // Rendering is synchronous; the registry look-up is not. The CLI runs on the
        // multi-threaded runtime, where a worker may block on a future this way.
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(self.0.decode(value)))
            .map_err(|failure| failure.message)
    }
}

async fn print_replay(kafka: &KafkaArgs, args: &DlqReplayArgs) -> anyhow::Result<()> {
    // The bar goes to stderr, and only when a person watches: piped or logged runs stay clean.
    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} read  {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let output = args.output;
    let dry_run = args.dry_run;
    let (mut replayed, mut skipped, mut refused) = (0_u64, 0_u64, 0_u64);
    // SIGINT or SIGTERM: send the batch in hand, then stop, rather than leave an open
    // transaction that holds back readers until the next replay or its timeout.
    let stop = rebound_service::Shutdown::new().triggered_by(rebound_service::shutdown_signal());
    let outcome = replay_dead_letters(kafka, args, rebound_service::now_epoch_ms(), &stop, |event| {
        let line = match event {
            ReplayEvent::Scanned { scanned, total } => {
                progress.set_length(total);
                progress.set_position(scanned);
                None
            }
            ReplayEvent::Replayed {
                letter,
                target,
                replay_count,
            } => {
                replayed += 1;
                let verb = if dry_run { "would_replay" } else { "replayed" };
                match output {
                    OutputFormat::Json => Some(
                        json!({
                            "event": verb,
                            "partition": letter.record.partition,
                            "offset": letter.record.offset,
                            "key": letter.record.key.as_deref().map(|key| String::from_utf8_lossy(key).into_owned()),
                            "kind": letter.kind_label(),
                            "target": target,
                            "replay_count": replay_count,
                        })
                        .to_string(),
                    ),
                    // A real run reports per-record progress on the bar, not as lines.
                    OutputFormat::Text if dry_run => Some(format!(
                        "would replay {}  key={}  {}  -> {target} (replay {replay_count})",
                        letter.position(),
                        letter.key_label(),
                        letter.kind_label()
                    )),
                    OutputFormat::Text => None,
                }
            }
            ReplayEvent::AlreadyReplayed { letter } => {
                skipped += 1;
                (output == OutputFormat::Json).then(|| {
                    json!({
                        "event": "already_replayed",
                        "partition": letter.record.partition,
                        "offset": letter.record.offset,
                        "key": letter.record.key.as_deref().map(|key| String::from_utf8_lossy(key).into_owned()),
                    })
                    .to_string()
                })
            }
            ReplayEvent::Refused { letter, reason } => {
                refused += 1;
                Some(match output {
                    OutputFormat::Json => json!({
                        "event": "refused",
                        "partition": letter.record.partition,
                        "offset": letter.record.offset,
                        "key": letter.record.key.as_deref().map(|key| String::from_utf8_lossy(key).into_owned()),
                        "kind": letter.kind_label(),
                        "replay_count": letter.replay_count(),
                        "reason": reason,
                    })
                    .to_string(),
                    OutputFormat::Text => format!(
                        "refused {}  key={}  {}: {reason}",
                        letter.position(),
                        letter.key_label(),
                        letter.kind_label()
                    ),
                })
            }
        };
        progress.set_message(format!("replayed {replayed}  skipped {skipped}  refused {refused}"));
        if let Some(line) = line {
            progress.suspend(|| println!("{line}"));
        }
    })
    .await;
    progress.finish_and_clear();
    let report = outcome?;
    match output {
        OutputFormat::Text => print!("{}", report.render_text()),
        OutputFormat::Json => {
            let mut summary = serde_json::to_value(&report)?;
            summary["event"] = json!("summary");
            println!("{summary}");
        }
    }
    if report.interrupted {
        anyhow::bail!(
            "interrupted after replaying {} dead letters; run the same command again to replay the rest",
            report.replayed
        );
    }
    if !report.dry_run && !report.refused.is_empty() {
        anyhow::bail!(
            "{} selected dead letters were not replayed (listed above as refused)",
            report.refused.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use crate::Cli;

    #[test]
    fn every_dlq_flag_has_a_rebound_environment_variable() {
        let mut command = Cli::command();
        command.build();
        let dlq = command.find_subcommand("dlq").expect("dlq subcommand");
        let mut checked = 0;
        for subcommand in dlq.get_subcommands() {
            for arg in subcommand.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let env = arg.get_env().and_then(|env| env.to_str()).unwrap_or_default();
                assert!(
                    env.starts_with("REBOUND_"),
                    "dlq {} --{id} has no REBOUND_ environment variable",
                    subcommand.get_name()
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "checked {checked} flags");
    }
}
