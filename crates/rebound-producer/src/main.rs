//! `rebound-producer`: parses flags, starts logging, and runs the chosen mode until it is done
//! or SIGINT/SIGTERM arrives. Exit codes: 0 done, 1 failed (or `send` timed out), 2 bad input.

use std::process::ExitCode;

use clap::Parser as _;
use rebound_producer::{ProducerArgs, ProducerError};
use rebound_service::{Shutdown, init_telemetry, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ProducerArgs::parse();
    let _telemetry = init_telemetry(
        args.common.log_format,
        args.common.otlp_endpoint.as_deref(),
        env!("CARGO_PKG_NAME"),
    );
    let shutdown = Shutdown::new().triggered_by(shutdown_signal());
    match rebound_producer::run(args, shutdown).await {
        Ok(acknowledged) => {
            if acknowledged > 0 {
                println!("{acknowledged} notes acknowledged");
            }
            ExitCode::SUCCESS
        }
        Err(
            error @ (ProducerError::InvalidFlag { .. }
            | ProducerError::ParseInput { .. }
            | ProducerError::AcceptInput { .. }),
        ) => {
            tracing::error!("{error}");
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
