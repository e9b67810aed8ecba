//! `rebound topics create` against a real broker: creates the pipeline's topics with the
//! requested partitions, and a second run leaves them as they are. `rebound topics delete
//! --prefix` deletes only the topics under its prefix, and refuses an empty one.

use std::process::Command;
use std::time::Duration;

use rebound_kafka::{TopicCreation, TopicSpec, create_topics, fetch_partition_counts};
use rebound_testkit::{broker, kafka_args, unique_prefix, wait_for};

fn rebound(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(args)
        .env("REBOUND_BROKERS", broker())
        .output()
        .expect("rebound runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_create_twice_creates_then_leaves_existing_topics_alone() {
    let prefix = unique_prefix("topics");
    let flags = [
        "topics",
        "create",
        "--topic-prefix",
        &prefix,
        "--partitions",
        "3",
        "--dlq-partitions",
        "2",
    ];
    let first = rebound(&flags);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first_output = String::from_utf8_lossy(&first.stdout).into_owned();
    for topic in ["notes", "retry-5s", "retry-1m", "dlq", "rebound-blocked-keys"] {
        assert!(
            first_output.contains(&format!("created  {prefix}{topic}")),
            "{first_output}"
        );
    }
    let second = rebound(&flags);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let second_output = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(second_output.matches("exists   ").count(), 5, "{second_output}");
    // The same answer for scripts: one JSON object.
    let json_flags: Vec<&str> = flags.iter().copied().chain(["--output", "json"]).collect();
    let third = rebound(&json_flags);
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    let report: serde_json::Value = serde_json::from_slice(&third.stdout).expect("one JSON object");
    assert_eq!(report["created"], 0, "{report}");
    assert_eq!(report["existing"], 5, "{report}");
    assert_eq!(report["topics"][0]["name"], format!("{prefix}notes"), "{report}");
    assert_eq!(report["topics"][0]["outcome"], "exists", "{report}");

    let topics: Vec<String> = ["notes", "retry-5s", "retry-1m", "dlq"]
        .iter()
        .map(|topic| format!("{prefix}{topic}"))
        .collect();
    let counts = fetch_partition_counts(&kafka_args(), &topics, Duration::from_secs(10))
        .await
        .expect("topics exist");
    assert_eq!(counts[&format!("{prefix}notes")], 3);
    assert_eq!(counts[&format!("{prefix}retry-1m")], 3);
    assert_eq!(counts[&format!("{prefix}dlq")], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_call_reports_created_and_existing_topics() {
    let prefix = unique_prefix("topics-lib");
    let args = rebound_cli::TopicsCreateArgs {
        sources: rebound_service::SourceTopicArgs {
            source_topics: vec!["notes".to_owned()],
        },
        topology: rebound_service::TopologyArgs {
            tiers: vec!["retry-5s:5s".to_owned()],
            backoff_factor: 2.0,
            backoff_max: Duration::from_secs(600),
            backoff_jitter: 0.2,
            naming: rebound_service::TopicNamingArgs {
                dlq_topic: "dlq".to_owned(),
                topic_prefix: prefix.clone(),
            },
        },
        key_order_topic: rebound_service::KeyOrderTopicArgs {
            blocked_keys_topic: "rebound-blocked-keys".to_owned(),
        },
        partitions: 1,
        tier_partitions: None,
        dlq_partitions: 1,
        replication_factor: 1,
        min_insync_replicas: Some(1),
        retention: Duration::from_secs(24 * 60 * 60),
        dlq_retention: Duration::from_secs(7 * 24 * 60 * 60),
        broker_wait: rebound_cli::BrokerWaitArgs {
            timeout: Duration::from_secs(30),
        },
        output: rebound_cli::OutputFormat::Text,
    };
    let created = rebound_cli::create_pipeline_topics(&kafka_args(), &args)
        .await
        .expect("created");
    assert_eq!(
        created,
        vec![
            TopicCreation::Created(format!("{prefix}notes")),
            TopicCreation::Created(format!("{prefix}retry-5s")),
            TopicCreation::Created(format!("{prefix}dlq")),
            TopicCreation::Created(format!("{prefix}rebound-blocked-keys")),
        ]
    );
    let again = rebound_cli::create_pipeline_topics(&kafka_args(), &args)
        .await
        .expect("idempotent");
    assert!(
        again
            .iter()
            .all(|outcome| matches!(outcome, TopicCreation::AlreadyExisted(_)))
    );
}

#[test]
fn unreachable_broker_is_a_clear_failure_with_exit_code_1() {
    let output = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(["topics", "create", "--brokers", "127.0.0.1:1", "--timeout", "3s"])
        .output()
        .expect("rebound runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no topics created on brokers 127.0.0.1:1"), "{stderr}");
    assert!(
        stderr.contains("Timed out") || stderr.contains("Broker transport failure"),
        "the cause is shown: {stderr}"
    );
    assert!(stderr.contains("notes"), "the error names the topics: {stderr}");
}

/// Topic names on the broker that start with `prefix`, once `wanted` holds for them (a
/// deletion takes a moment to reach the metadata); fails after 20 s.
async fn topics_until(prefix: &str, wanted: impl Fn(&[String]) -> bool) -> Vec<String> {
    let wanted = &wanted;
    wait_for(
        &format!("the topics named {prefix}* to match"),
        Duration::from_secs(20),
        || async move {
            let topics: Vec<String> = rebound_kafka::list_topics(&kafka_args(), Duration::from_secs(10))
                .await
                .expect("topics listed")
                .into_iter()
                .filter(|topic| topic.starts_with(prefix))
                .collect();
            wanted(&topics).then_some(topics)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_delete_by_prefix_deletes_only_the_matching_topics() {
    let base = unique_prefix("topics-delete");
    // Two topics under the prefix and one that only shares the run's base name.
    let doomed = format!("{base}doomed.");
    let kept = format!("{base}kept.");
    let specs: Vec<TopicSpec> = [format!("{doomed}a"), format!("{doomed}b"), format!("{kept}a")]
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions: 1,
            replication_factor: -1,
            config: Default::default(),
        })
        .collect();
    create_topics(&kafka_args(), &specs, Duration::from_secs(30))
        .await
        .expect("topics created");
    let all = topics_until(&base, |topics| topics.len() == 3).await;
    assert_eq!(all.len(), 3, "{all:?}");

    let dry = rebound(&["topics", "delete", "--prefix", &doomed, "--dry-run", "--output", "json"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let report: serde_json::Value = serde_json::from_slice(&dry.stdout).expect("one JSON object");
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        report["topics"],
        serde_json::json!([format!("{doomed}a"), format!("{doomed}b")])
    );
    assert_eq!(
        topics_until(&base, |_| true).await.len(),
        3,
        "a dry run deletes nothing"
    );

    let deleted = rebound(&["topics", "delete", "--prefix", &doomed]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let stdout = String::from_utf8_lossy(&deleted.stdout).into_owned();
    assert!(stdout.contains(&format!("deleted  {doomed}a\n")), "{stdout}");
    assert!(stdout.contains(&format!("deleted  {doomed}b\n")), "{stdout}");
    assert!(!stdout.contains(&kept), "{stdout}");
    let left = topics_until(&base, |topics| topics.len() == 1).await;
    assert_eq!(left, vec![format!("{kept}a")]);

    let cleanup = rebound(&["topics", "delete", "--prefix", &base]);
    assert!(cleanup.status.success(), "{}", String::from_utf8_lossy(&cleanup.stderr));
}

#[test]
fn topics_delete_refuses_an_empty_prefix_with_exit_code_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(["topics", "delete", "--prefix", ""])
        .env("REBOUND_BROKERS", "127.0.0.1:1")
        .output()
        .expect("rebound runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must not be empty"), "{stderr}");
}
