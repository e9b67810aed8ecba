//! `rebound-producer serve`: the HTTP intake in front of the durable outbox, with the relay
//! draining the outbox to Kafka, until shutdown or until the Kafka producer fails for good.
//! The intake's files (tokens, TLS) are loaded before anything else starts, so a bad one stops
//! the service before it opens the outbox or a listener.

use std::sync::Arc;
use std::time::Duration;

use rebound_kafka::{KafkaArgs, RecordProducer};
use rebound_service::{Readiness, Shutdown, events, serve_operational_endpoints};

use crate::admission::Admission;
use crate::auth::{Authenticator, watch_tokens};
use crate::config::ServeConfig;
use crate::intake::IntakeConfig;
use crate::limits::RequestGate;
use crate::listener::{self, ListenerSettings};
use crate::outbox::Outbox;
use crate::relay::{self, RelayStatus, relay_failed_for_good, start_outbox};
use crate::tls::watch_tls;
use crate::{ProducerError, http};

/// How often the rate limiter forgets clients whose rate has recovered.
const RATE_LIMITER_CLEANUP: Duration = Duration::from_secs(60);

/// Serves the HTTP API until `shutdown` triggers; then stops the relay and flushes what Kafka
/// has in hand (unacknowledged notes stay in the outbox).
pub(crate) async fn run(
    kafka: &KafkaArgs,
    topic: String,
    config: ServeConfig,
    encoder: rebound_registry::NoteEncoder,
    shutdown: Shutdown,
) -> Result<(), ProducerError> {
    let (admission, listener_settings) = intake_guards(&config.intake).await?;
    let producer: RecordProducer = crate::create_producer(kafka, config.delivery.send_timeout)?;
    let flush_producer = producer.clone();
    let (outbox, relay, status) = start_outbox(producer, topic, encoder, &config.outbox).await?;
    let flags = relay.flags.clone();
    let readiness = Arc::new(Readiness::default());
    readiness.set("outbox", true, format!("open at {}", outbox.path().display()));
    if let Some(listen) = config.metrics_listen {
        serve_operational_endpoints(listen, Arc::clone(&readiness), shutdown.clone())
            .await
            .map_err(|error| ProducerError::ServeHttp {
                listen: listen.to_string(),
                reason: error.to_string(),
            })?;
    }
    events::producer_rejection_counter_starts_at_zero();
    tokio::spawn(publish_outbox_state(
        outbox.clone(),
        Arc::clone(&status),
        readiness,
        shutdown.clone(),
    ));
    // A relay whose producer failed for good stops the whole service, so it is restarted.
    let relay_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let outcome = relay.run(shutdown.clone()).await;
            if outcome.is_err() {
                shutdown.trigger();
            }
            outcome
        }
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| ProducerError::ServeHttp {
            listen: config.listen.to_string(),
            reason: error.to_string(),
        })?;
    announce_listener(&config);
    tokio::spawn(forget_idle_clients(Arc::clone(&admission), shutdown.clone()));
    let app = http::router(
        http::ApiState {
            outbox,
            flags,
            status,
            limits: config.intake.limits,
        },
        admission,
    );
    listener::serve(listener, app, listener_settings, shutdown.clone()).await;
    shutdown.trigger();
    relay_failed_for_good(relay_task.await)?;
    if let Err(error) = flush_producer.flush(Duration::from_secs(5)).await {
        tracing::warn!(%error, "producer flush at shutdown failed; unacknowledged notes stay in the outbox");
    }
    tracing::info!("producer stopped");
    Ok(())
}

/// Loads the tokens and TLS files and sets up the checks every request passes.
async fn intake_guards(intake: &IntakeConfig) -> Result<(Arc<Admission>, ListenerSettings), ProducerError> {
    let tokens = match &intake.auth_tokens_file {
        Some(path) => Some(watch_tokens(path.clone(), intake.reload_interval).await?),
        None => None,
    };
    let tls = match &intake.tls {
        Some(files) => Some(watch_tls(files.clone(), intake.reload_interval).await?),
        None => None,
    };
    let admission = Arc::new(Admission {
        authenticator: Authenticator {
            tokens,
            client_certificates: intake.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some()),
        },
        gate: RequestGate::new(&intake.limits),
    });
    let settings = ListenerSettings {
        tls,
        header_timeout: intake.limits.header_timeout,
    };
    Ok((admission, settings))
}

fn announce_listener(config: &ServeConfig) {
    let scheme = if config.intake.tls.is_some() { "https" } else { "http" };
    let intake = &config.intake;
    if intake.authenticates() {
        tracing::info!(
            listen = %config.listen,
            scheme,
            bearer_tokens = intake.auth_tokens_file.is_some(),
            client_certificates = intake.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some()),
            "http api listening; credentials required on /v1/"
        );
    } else if config.listen.ip().is_loopback() {
        tracing::info!(listen = %config.listen, scheme, "http api listening on loopback without credentials");
    } else {
        tracing::warn!(
            listen = %config.listen,
            scheme,
            "http api listening with --insecure-listen: anyone who reaches it can write notes"
        );
    }
}

async fn forget_idle_clients(admission: Arc<Admission>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(RATE_LIMITER_CLEANUP);
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => admission.gate.forget_idle_clients(),
        }
    }
}

/// Keeps the outbox gauges and the readiness of the broker check current, also while idle.
async fn publish_outbox_state(outbox: Outbox, status: Arc<RelayStatus>, readiness: Arc<Readiness>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        events::producer_outbox_state(outbox.pending_notes(), relay::oldest_age_seconds(&outbox).await);
        let reachable = status.broker_reachable();
        events::producer_broker_reachable(reachable);
        readiness.set(
            "kafka",
            reachable,
            if reachable {
                "acknowledging"
            } else {
                "refusing sends; notes are kept in the outbox"
            },
        );
    }
}
