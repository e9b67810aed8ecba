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
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let shutdown = Shutdown::new().triggered_by(shutdown_signal());
    match rebound_producer::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        // A `send` input that is not valid notes is bad input, like a bad flag.
        Err(error @ (ProducerError::ParseInput { .. } | ProducerError::AcceptInput { .. })) => {
            tracing::error!("{error}");
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
