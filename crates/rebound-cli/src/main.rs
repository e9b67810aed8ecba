//! `rebound`: the admin command line. Parses flags, starts logging, runs one command and maps
//! its outcome to an exit code (0 done, 1 failed, 2 bad usage).

use std::process::ExitCode;

use clap::Parser as _;
use rebound_cli::{Cli, UsageError, run};
use rebound_service::init_telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = init_telemetry(cli.common.log_format, cli.common.otlp_endpoint.as_deref(), "rebound");
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // Bad usage found only once the flags were read together (a filter, a --to topic):
        // reported as clap reports its own, with clap's exit code 2.
        Err(error) if error.downcast_ref::<UsageError>().is_some() => {
            let usage = clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{error}\n"));
            let _ = usage.print();
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
