//! The shutdown signal: a future that completes on Ctrl-C or SIGTERM, and a cloneable
//! [`Shutdown`] handle that services and tests can trigger and wait on.

use std::future::Future;

use tokio::sync::watch;

/// A cloneable shutdown trigger and listener.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A shutdown that has not been triggered.
    pub fn new() -> Self {
        let (sender, receiver) = watch::channel(false);
        Self { sender, receiver }
    }

    /// Asks everything listening to stop.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Completes once triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        // An error means every sender is gone, which cannot happen while `self` holds one.
        let _ = receiver.wait_for(|triggered| *triggered).await;
    }

    /// Triggers this shutdown when `signal` completes; returns the handle for chaining.
    pub fn triggered_by(self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let trigger = self.clone();
        tokio::spawn(async move {
            signal.await;
            trigger.trigger();
        });
        self
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_completes_after_trigger_and_for_late_listeners() {
        let shutdown = Shutdown::new();
        let listener = shutdown.clone();
        let waiting = tokio::spawn(async move { listener.wait().await });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        waiting.await.expect("listener finishes");
        shutdown.clone().wait().await;
        assert!(shutdown.is_triggered());
    }
}
