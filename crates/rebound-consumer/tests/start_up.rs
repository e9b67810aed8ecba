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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_start_up_topic_check_stops_the_consumer_at_once() {
    let config = ConsumerArgs::parse_from(["rebound-consumer", "--brokers", NO_BROKER, "--sink", "null://"])
        .into_config()
        .expect("valid flags");
    let shutdown = Shutdown::new();
    let service = tokio::spawn(rebound_consumer::run(config, shutdown.clone()));
    // Asked to stop as soon as it runs: it is then in the topic check, or about to be.
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
async fn sigterm_during_the_start_up_topic_check_stops_the_scheduler_at_once() {
    let config = SchedulerArgs::parse_from(["rebound-scheduler", "--brokers", NO_BROKER])
        .into_config()
        .expect("valid flags");
    let shutdown = Shutdown::new();
    let service = tokio::spawn(rebound_scheduler::run(config, shutdown.clone()));
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
