//! Starting the consumer and the scheduler in-process against the test broker, and stopping
//! them the way SIGTERM would.

#![allow(dead_code, reason = "each test file uses a different subset")]

use clap::Parser as _;
use rebound_consumer::ConsumerArgs;
use rebound_scheduler::SchedulerArgs;
use rebound_testkit::RunningService;

/// Starts a consumer with these flags. The broker is added, and a group of its own unless the
/// flags name one: tests sharing a group would rebalance each other.
pub fn start_consumer(flags: &[&str]) -> RunningService {
    let broker = rebound_testkit::broker();
    let group = own_group("consumer", flags);
    let mut argv = vec![
        "rebound-consumer",
        "--brokers",
        &broker,
        "--batch-linger",
        "5ms",
        "--group",
        &group,
    ];
    argv.extend(without_group(flags));
    let config = ConsumerArgs::parse_from(argv)
        .into_config()
        .expect("valid consumer flags");
    RunningService::spawn("consumer", |shutdown| rebound_consumer::run(config, shutdown))
}

/// Starts a scheduler with these flags; broker and group are added as for the consumer.
pub fn start_scheduler(flags: &[&str]) -> RunningService {
    let broker = rebound_testkit::broker();
    let group = own_group("scheduler", flags);
    let mut argv = vec!["rebound-scheduler", "--brokers", &broker, "--group", &group];
    argv.extend(without_group(flags));
    let config = SchedulerArgs::parse_from(argv)
        .into_config()
        .expect("valid scheduler flags");
    RunningService::spawn("scheduler", |shutdown| rebound_scheduler::run(config, shutdown))
}

/// The group to use: the one the flags name, else one derived from the `--topic-prefix` flag,
/// which every test makes unique.
fn own_group(service: &str, flags: &[&str]) -> String {
    if let Some(index) = flags.iter().position(|flag| *flag == "--group") {
        return flags.get(index + 1).expect("--group has a value").to_string();
    }
    let prefix = flags
        .iter()
        .position(|flag| *flag == "--topic-prefix")
        .and_then(|index| flags.get(index + 1))
        .expect("tests pass --topic-prefix");
    format!("{prefix}{service}")
}

/// The flags less any `--group VALUE` pair, which [`own_group`] already took into account.
fn without_group<'flag>(flags: &[&'flag str]) -> Vec<&'flag str> {
    let mut kept = Vec::with_capacity(flags.len());
    let mut skip_value = false;
    for flag in flags {
        if skip_value {
            skip_value = false;
        } else if *flag == "--group" {
            skip_value = true;
        } else {
            kept.push(*flag);
        }
    }
    kept
}
