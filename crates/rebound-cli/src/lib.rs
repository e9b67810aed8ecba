//! The `rebound` admin CLI: topic creation and deletion, dead letters, and the accounting audit
//! of a pipeline run.
//! Each command is a function taking its parsed flags, so tests call them without a process.

mod audit;
mod dlq;
mod topics;

pub use audit::{AuditArgs, AuditReport, audit};
pub use dlq::{
    DeadLetter, DlqCommand, DlqFilter, DlqFilterArgs, DlqInspectArgs, DlqReplayArgs, DlqStats, DlqStatsArgs,
    DlqTopicArgs, DlqWatchArgs, OutputFormat, Rate, RefusedDeadLetter, ReplayEvent, ReplayReport, StatsGroup,
    UsageError, dlq_stats, inspect_dead_letters, replay_dead_letters, run_dlq_command, watch_dead_letters,
};
pub use topics::{
    TopicDeletionReport, TopicsCreateArgs, TopicsDeleteArgs, create_pipeline_topics, delete_topics_with_prefix,
    pipeline_topic_specs,
};

use anyhow::Context as _;
use rebound_service::CommonArgs;

/// `rebound`: administer a rebound pipeline.
#[derive(Debug, clap::Parser)]
#[command(
    name = "rebound",
    version,
    about = "Administer a rebound pipeline: topics, dead letters, audits."
)]
pub struct Cli {
    /// Kafka connection and logging.
    #[command(flatten)]
    pub common: CommonArgs,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Topic administration.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Account for every produced note version: applied, dead-lettered, or lost.
    Audit(AuditArgs),
    /// Dead letters: statistics, inspection, and replay (redrive) once the cause is fixed.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `rebound topics …`
#[derive(Debug, clap::Subcommand)]
pub enum TopicsCommand {
    /// Create the source, retry-tier and dead-letter topics; existing topics are left as they are.
    Create(TopicsCreateArgs),
    /// Delete every topic whose name starts with a prefix, such as a test or benchmark run's.
    Delete(TopicsDeleteArgs),
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topics(TopicsCommand::Create(args)) => {
            let outcomes = create_pipeline_topics(&cli.common.kafka, &args)
                .await
                .with_context(|| format!("no topics created on brokers {}", cli.common.kafka.brokers()))?;
            for outcome in outcomes {
                match outcome {
                    rebound_kafka::TopicCreation::Created(name) => println!("created  {name}"),
                    rebound_kafka::TopicCreation::AlreadyExisted(name) => println!("exists   {name}"),
                }
            }
            Ok(())
        }
        Command::Topics(TopicsCommand::Delete(args)) => {
            // An empty prefix is refused by clap already; the library's own check (a
            // UsageError) is mapped to exit code 2 by main.
            let report = delete_topics_with_prefix(&cli.common.kafka, &args).await?;
            match args.output {
                OutputFormat::Text => print!("{}", report.render_text()),
                OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
            }
            Ok(())
        }
        Command::Audit(args) => {
            let report = audit(&cli.common.kafka, &args).await?;
            print!("{}", report.render_table());
            if report.lost > 0 {
                anyhow::bail!("{} note versions are neither applied nor dead-lettered", report.lost);
            }
            Ok(())
        }
        Command::Dlq(command) => run_dlq_command(&cli.common.kafka, command).await,
    }
}

/// How long a command waits for the broker before giving up: one flag, one meaning, for every
/// `rebound` command that talks to Kafka.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerWaitArgs {
    /// How long to wait for the broker (metadata, topic creation or deletion, reads to the end of
    /// a topic) before giving up.
    #[arg(long, env = "REBOUND_TIMEOUT", default_value = "30s", value_parser = rebound_service::parse_duration_flag)]
    pub timeout: std::time::Duration,
}
