//! `rebound topics create` against a real broker: creates the pipeline's topics with the
//! requested partitions, and a second run leaves them as they are.

use std::process::Command;
use std::time::Duration;

use rebound_kafka::{TopicCreation, fetch_partition_counts};
use rebound_testkit::{broker, kafka_args, unique_prefix};

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
    for topic in ["notes", "retry-5s", "retry-1m", "dlq"] {
        assert!(
            first_output.contains(&format!("created  {prefix}{topic}")),
            "{first_output}"
        );
    }
    let second = rebound(&flags);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let second_output = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(second_output.matches("exists   ").count(), 4, "{second_output}");

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
        source_topics: vec!["notes".to_owned()],
        topology: rebound_service::TopologyArgs {
            tiers: vec!["retry-5s:5s".to_owned()],
            naming: rebound_service::TopicNamingArgs {
                dlq_topic: "dlq".to_owned(),
                topic_prefix: prefix.clone(),
            },
        },
        partitions: 1,
        tier_partitions: None,
        dlq_partitions: 1,
        replication_factor: 1,
        min_insync_replicas: Some(1),
        retention: "1d".to_owned(),
        dlq_retention: "7d".to_owned(),
        timeout: "30s".to_owned(),
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
