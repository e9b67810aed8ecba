//! Readiness as an orchestrator sees it: an instance of the consumer or the scheduler that holds
//! no partition (more instances than partitions) is still Ready, since it is healthy and waiting
//! for a rebalance, and an orchestrator waiting for it would stall a rolling update. How many
//! partitions an instance holds is the `rebound_assigned_partitions` metric instead.

#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{start_consumer, start_scheduler};
use rebound_testkit::{create_test_topics, free_local_port, unique_prefix};

/// `/readyz` status and body.
async fn readiness(client: &reqwest::Client, listen: &str) -> Option<(u16, String)> {
    let response = client.get(format!("http://{listen}/readyz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The partition count a `/readyz` report states ("subscribed; N partitions assigned", or none
/// assigned yet).
fn assigned_partitions(report: &str) -> usize {
    report
        .split("subscribed; ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// Waits until both instances answer `/readyz`, one holding the partitions and the other none, and checks both are ready then; panics with what each last said when that never happens.
async fn one_idle_and_both_ready(first: &str, second: &str) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut last = (None, None);
    while tokio::time::Instant::now() < deadline {
        last = (readiness(&client, first).await, readiness(&client, second).await);
        if let (Some((first_status, first_report)), Some((second_status, second_report))) = &last {
            let held = [assigned_partitions(first_report), assigned_partitions(second_report)];
            let holders = held.iter().filter(|count| **count > 0).count();
            // Idle means subscribed with nothing assigned: an instance still starting (its
            // transactional producer initialising, "joining the consumer group") is neither.
            let idle = [first_report, second_report]
                .iter()
                .zip(held)
                .filter(|(report, count)| report.contains("subscribed") && *count == 0)
                .count();
            if holders == 1 && idle == 1 {
                assert_eq!(
                    (*first_status, *second_status),
                    (200, 200),
                    "an instance without partitions must be ready:\n{first_report}\n{second_report}"
                );
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("never one instance holding the partitions and one idle; last /readyz answers: {last:?}");
}

fn as_strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_partitions_is_ready() {
    let prefix = unique_prefix("readiness");
    create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m", "dlq"], 1).await;
    let listens: Vec<String> = (0..4).map(|_| format!("127.0.0.1:{}", free_local_port())).collect();
    let consumer_group = format!("{prefix}consumer");
    let scheduler_group = format!("{prefix}scheduler");
    let consumer_flags = |listen: &str| {
        vec![
            "--topic-prefix".to_owned(),
            prefix.clone(),
            "--group".to_owned(),
            consumer_group.clone(),
            "--sink".to_owned(),
            "null://".to_owned(),
            "--metrics-listen".to_owned(),
            listen.to_owned(),
        ]
    };
    let scheduler_flags = |listen: &str| {
        vec![
            "--topic-prefix".to_owned(),
            prefix.clone(),
            "--group".to_owned(),
            scheduler_group.clone(),
            "--metrics-listen".to_owned(),
            listen.to_owned(),
        ]
    };
    let consumers = [
        start_consumer(&as_strs(&consumer_flags(&listens[0]))),
        start_consumer(&as_strs(&consumer_flags(&listens[1]))),
    ];
    let schedulers = [
        start_scheduler(&as_strs(&scheduler_flags(&listens[2]))),
        start_scheduler(&as_strs(&scheduler_flags(&listens[3]))),
    ];

    one_idle_and_both_ready(&listens[0], &listens[1]).await;
    one_idle_and_both_ready(&listens[2], &listens[3]).await;

    // The partition count is exported per service (the process-wide recorder holds one gauge per
    // service label, so in this process it shows whichever instance wrote last).
    let metrics = reqwest::get(format!("http://{}/metrics", listens[0]))
        .await
        .expect("scraped")
        .text()
        .await
        .expect("text");
    for service in ["consumer", "scheduler"] {
        let series = format!("rebound_assigned_partitions{{service=\"{service}\"}}");
        assert!(metrics.contains(&series), "{series} missing from /metrics:\n{metrics}");
    }

    for service in consumers.into_iter().chain(schedulers) {
        service.stop().await;
    }
}
