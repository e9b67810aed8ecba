//! Start-up as an orchestrator sees it: a service still asking the brokers about its topics
//! stops at once when told to, instead of after the check's own timeout.

use std::time::{Duration, Instant};

use clap::Parser as _;
use rebound_consumer::ConsumerArgs;
use rebound_scheduler::SchedulerArgs;
use rebound_service::Shutdown;

/// A loopback address where nothing listens, so the topic check waits for its timeout (15 s).
const NO_BROKER: &str = "127.0.0.1:1";

/// How long a stop during start-up may take: well under the check's 15 s.
const PROMPT_STOP: Duration = Duration::from_secs(5);

/// Triggers `shutdown` as soon as the service runs (it is then in the topic check, or about to
/// be) and checks that it returns cleanly, and promptly.
async fn assert_stops_at_once<E: std::fmt::Debug + Send + 'static>(
    service: impl Future<Output = Result<(), E>> + Send + 'static,
    shutdown: &Shutdown,
) {
    let service = tokio::spawn(service);
    tokio::task::yield_now().await;
    let asked_at = Instant::now();
    shutdown.trigger();
    let outcome = tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("stops within 30 s")
        .expect("does not panic");
    let took = asked_at.elapsed();
    assert!(outcome.is_ok(), "a stop during start-up is a clean stop: {outcome:?}");
    assert!(took < PROMPT_STOP, "stopped {took:?} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_start_up_topic_check_stops_the_consumer_at_once() {
    let config = ConsumerArgs::parse_from(["rebound-consumer", "--brokers", NO_BROKER, "--sink", "null://"])
        .into_config()
        .expect("valid flags");
    let shutdown = Shutdown::new();
    assert_stops_at_once(rebound_consumer::run(config, shutdown.clone()), &shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_start_up_topic_check_stops_the_scheduler_at_once() {
    let config = SchedulerArgs::parse_from(["rebound-scheduler", "--brokers", NO_BROKER])
        .into_config()
        .expect("valid flags");
    let shutdown = Shutdown::new();
    assert_stops_at_once(rebound_scheduler::run(config, shutdown.clone()), &shutdown).await;
}

/// The process, not only the library: a signal during the topic check ends the binary at once,
/// with exit code 0, without waiting for the check's thread to give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_consumer_process_checking_its_topics_ends_it_at_once() {
    use tokio::io::AsyncBufReadExt as _;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rebound-consumer"))
        .args(["--brokers", NO_BROKER, "--sink", "null://"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    // The configuration is logged right before the topic check begins.
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("reads stderr") {
            if line.contains("effective configuration") {
                return;
            }
        }
        panic!("the consumer ended before logging its configuration");
    })
    .await
    .expect("logs its configuration within 30 s");
    let pid = child.id().expect("running").to_string();
    let asked_at = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30 s")
        .expect("waits");
    let took = asked_at.elapsed();
    assert_eq!(status.code(), Some(0), "a stop during start-up is a clean stop");
    assert!(took < PROMPT_STOP, "exited {took:?} after SIGTERM");
}
