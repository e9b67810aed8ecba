//! `rebound-scheduler`: runs the scheduler until SIGINT/SIGTERM (exit codes in the README).

use std::process::ExitCode;

use clap::Parser as _;
use rebound_scheduler::SchedulerArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = SchedulerArgs::parse();
    let common = args.common.clone();
    rebound_service::service_main(
        env!("CARGO_PKG_NAME"),
        &common,
        || args.into_config(),
        rebound_scheduler::run,
        |_| false,
    )
    .await
}
