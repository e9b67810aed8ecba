//! `rebound-consumer`: runs the consumer until SIGINT/SIGTERM (exit codes in the README).

use std::process::ExitCode;

use clap::Parser as _;
use rebound_consumer::ConsumerArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ConsumerArgs::parse();
    let common = args.common.clone();
    rebound_service::service_main(
        env!("CARGO_PKG_NAME"),
        &common,
        || args.into_config(),
        rebound_consumer::run,
        |_| false,
    )
    .await
}
