//! The whole of a service binary's `main`, in one place: logging from the common flags, flags
//! validated into a config before any work (exit 2 when they are not), the shutdown signal,
//! the service's `run`, and the outcome mapped to the documented exit codes (0 stopped cleanly,
//! 1 failed, 2 bad usage or bad input). Each `main.rs` is then one call.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use crate::{CommonArgs, Shutdown, init_telemetry, shutdown_signal};

/// Runs a service as its binary's `main` does and returns the exit code. `into_config`
/// validates the flags; `run` is the service's library entry point; `is_bad_input` picks the
/// run errors that are the user's input rather than a failure (exit 2 instead of 1).
pub async fn service_main<Config, ConfigError, RunError, Running>(
    service: &'static str,
    common: &CommonArgs,
    into_config: impl FnOnce() -> Result<Config, ConfigError>,
    run: impl FnOnce(Config, Shutdown) -> Running,
    is_bad_input: impl Fn(&RunError) -> bool,
) -> ExitCode
where
    ConfigError: Display,
    RunError: Display,
    Running: Future<Output = Result<(), RunError>>,
{
    // Kept alive until the service returns: dropping it flushes the trace exporter.
    let _telemetry = init_telemetry(common.log_format, common.otlp_endpoint.as_deref(), service);
    let config = match into_config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let shutdown = Shutdown::new().triggered_by(shutdown_signal());
    match run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            if is_bad_input(&error) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
