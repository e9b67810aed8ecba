//! The `rebound` admin CLI: topic creation and deletion, dead letters, and the accounting audit
//! of a pipeline run.
//! Each command is a function taking its parsed flags, so tests call them without a process.

mod audit;
mod dlq;
mod progress;
mod topics;

pub use audit::{AuditArgs, AuditOutput, AuditReport, NoteVersion, TierWait, audit};
pub use dlq::{
    DeadLetter, DlqCommand, DlqFilter, DlqFilterArgs, DlqInspectArgs, DlqReplayArgs, DlqStats, DlqStatsArgs,
    DlqTopicArgs, DlqWatchArgs, OutputFormat, Rate, RefusedDeadLetter, ReplayEvent, ReplayReport, StatsGroup,
    UsageError, dlq_stats, inspect_dead_letters, replay_dead_letters, run_dlq_command, watch_dead_letters,
};
pub use progress::{describe_wait, render_progress_line};
pub use topics::{
    TopicCreationOutcome, TopicCreationReport, TopicDeletionReport, TopicsCreateArgs, TopicsDeleteArgs,
    create_pipeline_topics, delete_topics_with_prefix, pipeline_topic_specs,
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
    /// Print the shell completion script of `rebound` for bash, zsh or fish (README: Shell
    /// completions and man pages).
    Completions(CompletionsArgs),
}

/// `rebound completions SHELL`
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (elvish and powershell work too).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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
            let report = TopicCreationReport::from_outcomes(outcomes);
            match args.output {
                OutputFormat::Text => print!("{}", report.render_text()),
                OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
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
            match args.output {
                AuditOutput::Text => print!("{}", report.render_table()),
                AuditOutput::Json => println!("{}", report.to_json()),
                AuditOutput::Progress => println!("{}", render_progress_line(&report)),
            }
            // A progress line is judged mid-run: what is not accounted for yet may still be on
            // its way, so it is not called lost there either.
            if args.output == AuditOutput::Progress && !report.settled() {
                anyhow::bail!("not every note version is applied or dead-lettered yet");
            }
            if report.lost > 0 {
                anyhow::bail!("{} note versions are neither applied nor dead-lettered", report.lost);
            }
            if !report.settled() {
                anyhow::bail!(
                    "{} note versions are not applied yet but can still arrive: {}",
                    report.waiting(),
                    describe_wait(&report)
                );
            }
            Ok(())
        }
        Command::Dlq(command) => run_dlq_command(&cli.common.kafka, command).await,
        Command::Completions(args) => {
            use clap::CommandFactory as _;
            // Generated into memory first: clap_complete panics on a failed write, and a reader
            // that stops early (`| head`) is no error.
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "rebound", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(anyhow::Error::new(error).context("writing the completion script to stdout failed"))
                }
                _ => Ok(()),
            }
        }
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
