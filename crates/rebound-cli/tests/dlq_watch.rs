//! `rebound dlq watch` against a real broker: it exports the DLQ backlog as metrics and posts
//! one Slack-compatible message when the backlog crosses the threshold, none while it stays
//! there, and one when a redrive brings it back under. Alone in its test binary because it
//! reads the process-wide metrics recorder.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use clap::Parser as _;
use rebound_cli::{Cli, Command as CliCommand, DlqCommand};
use rebound_retry::{RecordHeaders, contract};
use rebound_testkit::{
    RunningService, broker, create_test_topics, free_local_port, kafka_args, metric_sample, produce_raw, unique_prefix,
    wait_for, wait_for_http_ok,
};
use serde_json::Value;

type Received = Arc<Mutex<Vec<Value>>>;

async fn start_webhook_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hooks/secret-token",
            post(|State(received): State<Received>, Json(body): Json<Value>| async move {
                received.lock().expect("lock").push(body);
                "ok"
            }),
        )
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/hooks/secret-token"), received)
}

async fn produce_dead_letters(prefix: &str, keys: &[&str]) {
    for key in keys {
        let mut headers = RecordHeaders::new();
        headers.set(contract::ATTEMPT, "1");
        headers.set(contract::ORIGINAL_TOPIC, format!("{prefix}notes"));
        headers.set(contract::ORIGINAL_PARTITION, "0");
        headers.set(contract::ORIGINAL_OFFSET, "0");
        headers.set(contract::ERROR_KIND, "permanent");
        headers.set(contract::ERROR_MESSAGE, "http sink answered 422");
        produce_raw(&format!("{prefix}dlq"), Some(key.as_bytes()), Some(b"value"), headers).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_notifies_once_on_crossing_and_once_on_recovery() {
    let prefix = unique_prefix("dlq-watch");
    create_test_topics(&prefix, &["notes", "dlq", "parked"], 1).await;
    let (webhook, received) = start_webhook_receiver().await;
    let metrics_listen = format!("127.0.0.1:{}", free_local_port());
    let broker = broker();
    let cli = Cli::parse_from([
        "rebound",
        "--brokers",
        &broker,
        "dlq",
        "watch",
        "--topic-prefix",
        &prefix,
        "--threshold",
        "3",
        "--interval",
        "200ms",
        "--webhook",
        &webhook,
        "--metrics-listen",
        &metrics_listen,
    ]);
    let CliCommand::Dlq(DlqCommand::Watch(args)) = cli.command else {
        panic!("parsed dlq watch");
    };
    let watcher = RunningService::spawn("dlq watch", |shutdown| async move {
        rebound_cli::watch_dead_letters(&kafka_args(), &args, shutdown).await
    });
    wait_for_http_ok(&format!("http://{metrics_listen}/readyz"), Duration::from_secs(30)).await;
    let metrics_url = format!("http://{metrics_listen}/metrics");
    let depth_series = format!("rebound_dlq_depth_records{{topic=\"{prefix}dlq\"}}");
    let checks_series = format!("rebound_dlq_watch_checks_total{{topic=\"{prefix}dlq\"}}");
    let scrape = || async {
        reqwest::get(&metrics_url)
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    };

    produce_dead_letters(&prefix, &["a", "b"]).await;
    wait_for("depth 2 exported", Duration::from_secs(30), || async {
        (metric_sample(&scrape().await, &depth_series) == Some(2.0)).then_some(())
    })
    .await;
    assert!(
        received.lock().expect("lock").is_empty(),
        "under the threshold: no message"
    );

    // One more, not two: with two the watch may check between them and announce either count.
    produce_dead_letters(&prefix, &["c"]).await;
    wait_for("the crossing notification", Duration::from_secs(30), || async {
        (received.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    let checks_then = metric_sample(&scrape().await, &checks_series).expect("checks counted");
    wait_for("three more checks", Duration::from_secs(30), || async {
        (metric_sample(&scrape().await, &checks_series)? >= checks_then + 3.0).then_some(())
    })
    .await;
    assert_eq!(
        received.lock().expect("lock").len(),
        1,
        "a backlog that stays high is announced once"
    );
    let crossed = received.lock().expect("lock")[0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(crossed.contains(&format!("`{prefix}dlq` holds 3")), "{crossed}");

    let redrive = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args([
            "--brokers",
            &broker,
            "dlq",
            "replay",
            "--topic-prefix",
            &prefix,
            "--to",
            "parked",
        ])
        .output()
        .expect("rebound runs");
    assert!(redrive.status.success(), "{}", String::from_utf8_lossy(&redrive.stderr));
    wait_for("the recovery notification", Duration::from_secs(30), || async {
        (received.lock().expect("lock").len() == 2).then_some(())
    })
    .await;
    let recovered = received.lock().expect("lock")[1]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(recovered.contains("back under"), "{recovered}");
    assert_eq!(metric_sample(&scrape().await, &depth_series), Some(0.0));
    let notifications = scrape().await;
    assert!(
        notifications.contains("rebound_dlq_notifications_total"),
        "{notifications}"
    );
    watcher.stop().await;
}
