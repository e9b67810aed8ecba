//! [`RunningService`]: any service (or long-running command) run in-process on a spawned task,
//! and stopped the way SIGTERM would stop it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use rebound_service::Shutdown;
use tokio::task::JoinHandle;

/// How long [`RunningService::stop`] waits for the service to return after shutdown.
pub const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// A service running in this process on a task of its own. The testkit knows no service: the
/// caller hands [`RunningService::spawn`] a closure that starts one with the given [`Shutdown`].
#[derive(Debug)]
pub struct RunningService {
    name: String,
    shutdown: Shutdown,
    handle: JoinHandle<Result<(), String>>,
}

impl RunningService {
    /// Spawns `run(shutdown)` on the current runtime. `name` appears in every failure message.
    pub fn spawn<F, Fut, E>(name: &str, run: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let shutdown = Shutdown::new();
        let service = run(shutdown.clone());
        let handle = tokio::spawn(async move { service.await.map_err(|error| error.to_string()) });
        Self {
            name: name.to_owned(),
            shutdown,
            handle,
        }
    }

    /// The service's shutdown, for a test that triggers or watches it itself.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Triggers shutdown and waits up to [`STOP_DEADLINE`] for a clean exit. Panics if the
    /// service does not stop in time, panicked, or returned an error.
    pub async fn stop(self) {
        self.stop_within(STOP_DEADLINE).await;
    }

    /// As [`RunningService::stop`], with another deadline.
    pub async fn stop_within(self, deadline: Duration) {
        let Self { name, shutdown, handle } = self;
        shutdown.trigger();
        let joined = tokio::time::timeout(deadline, handle)
            .await
            .unwrap_or_else(|_| panic!("{name} stops within {deadline:?} after shutdown"));
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("{name} exits cleanly, but it failed: {error}"),
            Err(join_error) => panic!("{name} task does not panic, but it did: {join_error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_triggers_shutdown_and_waits_for_a_clean_exit() {
        let service = RunningService::spawn("idle", |shutdown| async move {
            shutdown.wait().await;
            Ok::<(), String>(())
        });
        assert!(!service.shutdown().is_triggered());
        service.stop().await;
    }

    #[tokio::test]
    #[should_panic(expected = "failing exits cleanly, but it failed: broken")]
    async fn stop_fails_loudly_on_an_error() {
        RunningService::spawn("failing", |_| async { Err::<(), _>("broken") })
            .stop()
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "stuck stops within")]
    async fn stop_fails_loudly_when_the_service_ignores_shutdown() {
        RunningService::spawn("stuck", |_| std::future::pending::<Result<(), String>>())
            .stop_within(Duration::from_millis(50))
            .await;
    }
}
