//! `rebound-consumer`: parses flags, starts logging, and runs the consumer until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser as _;
use rebound_consumer::ConsumerArgs;
use rebound_service::{Shutdown, init_telemetry, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ConsumerArgs::parse();
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
    // The effective configuration, for operators; its Debug form redacts secret Kafka
    // properties and the credentials of an HTTP sink's URL.
    tracing::info!(config = ?config, "effective configuration");
    let shutdown = Shutdown::new().triggered_by(shutdown_signal());
    match rebound_consumer::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
