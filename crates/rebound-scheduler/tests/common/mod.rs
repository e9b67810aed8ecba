//! Starting the scheduler in-process against the test broker for the scheduler's own tests.

#![allow(dead_code, reason = "each test file uses a different subset")]

use clap::Parser as _;
use rebound_scheduler::SchedulerArgs;
use rebound_testkit::{RunningService, broker};

/// The consumer group the scheduler of a test with this topic prefix joins.
pub fn scheduler_group(prefix: &str) -> String {
    format!("{prefix}scheduler")
}

/// Starts a scheduler serving one tier given as `--tier` takes it (`NAME` or `NAME:DELAY`) of the
/// topics under `prefix`, in the group `scheduler_group(prefix)`, with `extra_flags` appended.
pub fn start_scheduler(prefix: &str, tier: &str, extra_flags: &[&str]) -> RunningService {
    let broker = broker();
    let group = scheduler_group(prefix);
    let mut argv = vec![
        "rebound-scheduler",
        "--brokers",
        &broker,
        "--topic-prefix",
        prefix,
        "--group",
        &group,
        "--tier",
        tier,
    ];
    argv.extend_from_slice(extra_flags);
    let config = SchedulerArgs::parse_from(argv).into_config().expect("valid flags");
    RunningService::spawn("scheduler", |shutdown| rebound_scheduler::run(config, shutdown))
}
