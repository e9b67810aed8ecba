//! `rebound topics create`: the pipeline's topics with partition counts, retention and
//! replication from flags, created idempotently, and the consumer's compacted per-key order
//! state topic. `rebound topics delete`: every topic whose name
//! starts with a prefix (a test or benchmark run's topics).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use rebound_kafka::{
    KafkaArgs, TopicCreation, TopicSpec, create_topics, delete_topics, key_order_state_topic_spec, list_topics,
};
use rebound_service::{KeyOrderTopicArgs, SourceTopicArgs, TopologyArgs, parse_duration_flag};
use serde::Serialize;

use crate::{OutputFormat, UsageError};

/// Flags of `rebound topics create`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicsCreateArgs {
    /// The source topics.
    #[command(flatten)]
    pub sources: SourceTopicArgs,

    /// Tiers, DLQ and topic prefix, shared with the services (only the tiers' names are used).
    #[command(flatten)]
    pub topology: TopologyArgs,

    /// The consumer's per-key order state topic, created compacted with one partition.
    #[command(flatten)]
    pub key_order_topic: KeyOrderTopicArgs,

    /// Partitions of each source topic; also the default for tiers.
    #[arg(long, env = "REBOUND_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,

    /// Partitions of each tier topic (default: as the source).
    #[arg(long, env = "REBOUND_TIER_PARTITIONS")]
    pub tier_partitions: Option<i32>,

    /// Partitions of the dead-letter topic.
    #[arg(long, env = "REBOUND_DLQ_PARTITIONS", default_value_t = 1)]
    pub dlq_partitions: i32,

    /// Replication factor of every topic; -1 takes the broker's default.
    #[arg(long, env = "REBOUND_REPLICATION_FACTOR", default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i32,

    /// `min.insync.replicas` of every topic: how many replicas must have a record before an
    /// `acks=all` write (every rebound producer) is acknowledged. Not set: the broker's default.
    #[arg(long, env = "REBOUND_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,

    /// Retention of source and tier topics.
    #[arg(long, env = "REBOUND_RETENTION", default_value = "7d", value_parser = parse_duration_flag)]
    pub retention: Duration,

    /// Retention of the dead-letter topic; must be longer than the source's, so a dead letter
    /// outlives the record it came from long enough to be inspected and replayed.
    #[arg(long, env = "REBOUND_DLQ_RETENTION", default_value = "28d", value_parser = parse_duration_flag)]
    pub dlq_retention: Duration,

    /// The broker wait.
    #[command(flatten)]
    pub broker_wait: crate::BrokerWaitArgs,

    /// `text` for people (one `created  NAME` or `exists   NAME` line per topic), or `json`:
    /// one object with each topic and what happened to it (schema in the README).
    #[arg(long, env = "REBOUND_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// What `rebound topics create` did, topic by topic; its `--output json` form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicCreationReport {
    /// Every topic of the pipeline, in creation order.
    pub topics: Vec<TopicCreationOutcome>,
    /// How many were created by this run.
    pub created: usize,
    /// How many existed already (left as they are).
    pub existing: usize,
}

/// One topic of a [`TopicCreationReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicCreationOutcome {
    /// The topic's full name, prefix included.
    pub name: String,
    /// `created` or `exists`.
    pub outcome: &'static str,
}

impl TopicCreationReport {
    /// The report of a create request's outcomes.
    pub fn from_outcomes(outcomes: Vec<TopicCreation>) -> Self {
        let topics: Vec<TopicCreationOutcome> = outcomes
            .into_iter()
            .map(|outcome| match outcome {
                TopicCreation::Created(name) => TopicCreationOutcome {
                    name,
                    outcome: "created",
                },
                TopicCreation::AlreadyExisted(name) => TopicCreationOutcome {
                    name,
                    outcome: "exists",
                },
            })
            .collect();
        let created = topics.iter().filter(|topic| topic.outcome == "created").count();
        Self {
            existing: topics.len() - created,
            created,
            topics,
        }
    }

    /// One `created  NAME` or `exists   NAME` line per topic, for people (and the scripts that
    /// read these lines).
    pub fn render_text(&self) -> String {
        self.topics
            .iter()
            .map(|topic| format!("{:<8} {}\n", topic.outcome, topic.name))
            .collect()
    }
}

/// The topic specifications the flags describe, validated.
pub fn pipeline_topic_specs(args: &TopicsCreateArgs) -> anyhow::Result<Vec<TopicSpec>> {
    let (retention, dlq_retention) = (args.retention, args.dlq_retention);
    anyhow::ensure!(
        dlq_retention > retention,
        "invalid --dlq-retention: {} must be longer than --retention {}",
        humantime::format_duration(dlq_retention),
        humantime::format_duration(retention)
    );
    for (flag, count) in [
        ("--partitions", args.partitions),
        ("--tier-partitions", args.tier_partitions.unwrap_or(args.partitions)),
        ("--dlq-partitions", args.dlq_partitions),
    ] {
        anyhow::ensure!(count >= 1, "invalid {flag}: {count} (at least 1)");
    }
    anyhow::ensure!(
        args.replication_factor == -1 || args.replication_factor >= 1,
        "invalid --replication-factor: {} (at least 1, or -1 for the broker default)",
        args.replication_factor
    );
    if let Some(min_isr) = args.min_insync_replicas {
        anyhow::ensure!(
            min_isr >= 1 && (args.replication_factor == -1 || min_isr <= args.replication_factor),
            "invalid --min-insync-replicas: {min_isr} (at least 1 and at most --replication-factor {})",
            args.replication_factor
        );
    }
    let spec = |name: &str, partitions: i32, retention: Duration| {
        let mut config = BTreeMap::from([("retention.ms".to_owned(), retention.as_millis().to_string())]);
        if let Some(min_isr) = args.min_insync_replicas {
            config.insert("min.insync.replicas".to_owned(), min_isr.to_string());
        }
        TopicSpec {
            name: args.topology.naming.prefixed(name),
            partitions,
            replication_factor: args.replication_factor,
            config,
        }
    };
    let mut specs: Vec<TopicSpec> = args
        .sources
        .source_topics
        .iter()
        .map(|topic| spec(topic, args.partitions, retention))
        .collect();
    for tier in args.topology.tier_names() {
        specs.push(spec(&tier, args.tier_partitions.unwrap_or(args.partitions), retention));
    }
    specs.push(spec(
        &args.topology.naming.dlq_topic,
        args.dlq_partitions,
        dlq_retention,
    ));
    let state_topic = args
        .key_order_topic
        .prefixed(&args.topology.naming)
        .map_err(|error| anyhow::anyhow!("invalid {}: {}", error.flag, error.reason))?;
    specs.push(key_order_state_topic_spec(
        &state_topic,
        args.replication_factor,
        args.min_insync_replicas,
    ));
    Ok(specs)
}

/// Creates the pipeline's topics that do not exist yet.
pub async fn create_pipeline_topics(kafka: &KafkaArgs, args: &TopicsCreateArgs) -> anyhow::Result<Vec<TopicCreation>> {
    let specs = pipeline_topic_specs(args)?;
    Ok(create_topics(kafka, &specs, args.broker_wait.timeout).await?)
}

/// Flags of `rebound topics delete`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicsDeleteArgs {
    /// Delete every topic whose name starts with this (not empty). Its own variable rather than
    /// `REBOUND_TOPIC_PREFIX`, so a pipeline's environment never turns into a deletion.
    #[arg(long, env = "REBOUND_DELETE_PREFIX", value_parser = parse_delete_prefix)]
    pub prefix: String,

    /// List the topics that would be deleted; delete nothing.
    #[arg(long, env = "REBOUND_DELETE_DRY_RUN")]
    pub dry_run: bool,

    /// `text` for people (one `deleted  NAME` line per topic), or `json`: one object with the
    /// prefix, whether it was a dry run, and the topics.
    #[arg(long, env = "REBOUND_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// The broker wait.
    #[command(flatten)]
    pub broker_wait: crate::BrokerWaitArgs,
}

/// An empty prefix would match every topic of the cluster.
fn parse_delete_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("the prefix must not be empty (it would match every topic)".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// What `rebound topics delete` deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDeletionReport {
    /// The prefix the topics were selected by.
    pub prefix: String,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
    /// The selected topics, sorted.
    pub topics: Vec<String>,
}

impl TopicDeletionReport {
    /// One line per topic and a summary line, for people.
    pub fn render_text(&self) -> String {
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        let mut text: String = self.topics.iter().map(|topic| format!("{verb}  {topic}\n")).collect();
        text.push_str(&format!(
            "{} topics {} with prefix {}\n",
            self.topics.len(),
            if self.dry_run { "would be deleted" } else { "deleted" },
            self.prefix
        ));
        text
    }
}

/// Deletes every topic whose name starts with `args.prefix` (only lists them with `--dry-run`).
/// Internal topics (`__consumer_offsets`, ...) are never selected. An empty prefix is a
/// [`UsageError`].
pub async fn delete_topics_with_prefix(
    kafka: &KafkaArgs,
    args: &TopicsDeleteArgs,
) -> anyhow::Result<TopicDeletionReport> {
    parse_delete_prefix(&args.prefix).map_err(UsageError)?;
    let timeout = args.broker_wait.timeout;
    let topics: Vec<String> = list_topics(kafka, timeout)
        .await
        .with_context(|| format!("cannot list the topics on brokers {}", kafka.brokers()))?
        .into_iter()
        .filter(|topic| topic.starts_with(&args.prefix) && !topic.starts_with("__"))
        .collect();
    if !args.dry_run {
        delete_topics(kafka, &topics, timeout).await.with_context(|| {
            format!(
                "topics with prefix {} not deleted on brokers {}",
                args.prefix,
                kafka.brokers()
            )
        })?;
    }
    Ok(TopicDeletionReport {
        prefix: args.prefix.clone(),
        dry_run: args.dry_run,
        topics,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command, TopicsCommand};

    fn parse(flags: &[&str]) -> TopicsCreateArgs {
        let mut argv = vec!["rebound", "topics", "create"];
        argv.extend_from_slice(flags);
        match Cli::parse_from(argv).command {
            Command::Topics(TopicsCommand::Create(args)) => args,
            _ => unreachable!("parsed topics create"),
        }
    }

    #[test]
    fn defaults_create_the_four_pipeline_topics_with_longer_dlq_retention_and_the_state_topic() {
        let specs = pipeline_topic_specs(&parse(&[])).expect("valid");
        let names: Vec<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["notes", "retry-5s", "retry-1m", "dlq", "rebound-blocked-keys"]
        );
        assert_eq!(specs[4].config["cleanup.policy"], "compact");
        assert_eq!(specs[4].partitions, 1);
        let retention = |index: usize| specs[index].config["retention.ms"].parse::<u64>().expect("number");
        assert!(retention(3) > retention(0));
    }

    #[test]
    fn prefix_and_tier_specs_are_honoured() {
        let specs = pipeline_topic_specs(&parse(&[
            "--topic-prefix",
            "s.",
            "--tier",
            "r1:1s",
            "--partitions",
            "3",
        ]))
        .expect("valid");
        let names: Vec<(&str, i32)> = specs.iter().map(|spec| (spec.name.as_str(), spec.partitions)).collect();
        assert_eq!(
            names,
            vec![("s.notes", 3), ("s.r1", 3), ("s.dlq", 1), ("s.rebound-blocked-keys", 1)]
        );
    }

    #[test]
    fn replication_and_min_insync_replicas_reach_every_topic() {
        let specs =
            pipeline_topic_specs(&parse(&["--replication-factor", "3", "--min-insync-replicas", "2"])).expect("valid");
        for spec in &specs {
            assert_eq!(spec.replication_factor, 3, "{}", spec.name);
            assert_eq!(spec.config["min.insync.replicas"], "2", "{}", spec.name);
        }
        let error = pipeline_topic_specs(&parse(&["--replication-factor", "2", "--min-insync-replicas", "3"]))
            .expect_err("more in-sync replicas than replicas");
        assert!(error.to_string().contains("--min-insync-replicas"), "{error}");
        let unset = pipeline_topic_specs(&parse(&[])).expect("valid");
        assert!(!unset[0].config.contains_key("min.insync.replicas"));
    }

    #[test]
    fn delete_refuses_an_empty_prefix_and_lists_what_it_deletes() {
        let error = Cli::try_parse_from(["rebound", "topics", "delete", "--prefix", ""]).expect_err("empty prefix");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        let report = TopicDeletionReport {
            prefix: "b.".to_owned(),
            dry_run: true,
            topics: vec!["b.notes".to_owned(), "b.dlq".to_owned()],
        };
        assert_eq!(
            report.render_text(),
            "would delete  b.notes\nwould delete  b.dlq\n2 topics would be deleted with prefix b.\n"
        );
    }

    #[test]
    fn shorter_dlq_retention_is_refused() {
        let error = pipeline_topic_specs(&parse(&["--dlq-retention", "1d"])).expect_err("invalid");
        assert!(error.to_string().contains("--dlq-retention"), "{error}");
        assert!(
            error.to_string().contains("1day must be longer than --retention 7days"),
            "{error}"
        );
    }

    #[test]
    fn a_value_that_is_no_duration_is_refused_by_clap_naming_the_flag() {
        for argv in [
            &["rebound", "topics", "create", "--retention", "a week"][..],
            &["rebound", "topics", "create", "--dlq-retention", "28"],
            &["rebound", "topics", "create", "--timeout", "soon"],
            &["rebound", "topics", "delete", "--prefix", "b.", "--timeout", "soon"],
            &["rebound", "dlq", "stats", "--timeout", "soon"],
            &["rebound", "dlq", "watch", "--interval", "often"],
        ] {
            let flag = argv[argv.len() - 2];
            let error = Cli::try_parse_from(argv).expect_err(flag);
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{argv:?}");
            let error = error.to_string();
            assert!(
                error.contains(flag) && error.contains("not a duration"),
                "{argv:?}: {error}"
            );
        }
    }
}
