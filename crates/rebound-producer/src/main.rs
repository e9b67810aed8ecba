//! `rebound-producer`: runs the chosen mode until it is done or SIGINT/SIGTERM arrives. Exit
//! codes: 0 done, 1 failed (or `send` timed out), 2 bad flags or bad input.

use std::process::ExitCode;

use clap::Parser as _;
use rebound_producer::{ProducerArgs, ProducerError};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ProducerArgs::parse();
    let common = args.common.clone();
    rebound_service::service_main(
        env!("CARGO_PKG_NAME"),
        &common,
        || args.into_config(),
        rebound_producer::run,
        // A `send` input that is not valid notes, or an intake file that cannot be used, is bad
        // input, like a bad flag.
        |error| {
            matches!(
                error,
                ProducerError::ParseInput { .. }
                    | ProducerError::AcceptInput { .. }
                    | ProducerError::LoadIntakeFile { .. }
            )
        },
    )
    .await
}
