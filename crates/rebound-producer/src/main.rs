//! `rebound-producer`: parses flags, starts logging, and runs the chosen mode until it is done
//! or SIGINT/SIGTERM arrives.

use std::process::ExitCode;

use clap::Parser as _;
use rebound_producer::ProducerArgs;
use rebound_service::{Shutdown, init_telemetry, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ProducerArgs::parse();
    init_telemetry(args.common.log_format);
    let shutdown = Shutdown::new().triggered_by(shutdown_signal());
    match rebound_producer::run(args, shutdown).await {
        Ok(acknowledged) => {
            println!("{acknowledged} notes acknowledged");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
