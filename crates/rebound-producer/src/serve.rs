//! `rebound-producer serve`: the HTTP intake in front of the durable outbox, with the relay
//! draining the outbox to Kafka, until shutdown or until the Kafka producer fails for good.

use std::sync::Arc;
use std::time::Duration;

use rebound_kafka::{KafkaArgs, RecordProducer};
use rebound_service::{Readiness, Shutdown, events, serve_operational_endpoints};

use crate::config::ServeConfig;
use crate::outbox::Outbox;
use crate::relay::{self, RelayStatus, relay_failed_for_good, start_outbox};
use crate::{ProducerError, http};

/// Serves the HTTP API until `shutdown` triggers; then stops the relay and flushes what Kafka
/// has in hand (unacknowledged notes stay in the outbox).
pub(crate) async fn run(
    kafka: &KafkaArgs,
    topic: String,
    config: ServeConfig,
    encoder: rebound_registry::NoteEncoder,
    shutdown: Shutdown,
) -> Result<(), ProducerError> {
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
    tracing::info!(listen = %config.listen, "http api listening");
    let app = http::router(http::ApiState {
        outbox,
        flags,
        status,
        max_body_bytes: config.max_body_bytes,
        record_limit: config.delivery.record_limit,
    });
    let graceful = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { graceful.wait().await })
        .await
        .map_err(|error| ProducerError::ServeHttp {
            listen: config.listen.to_string(),
            reason: error.to_string(),
        })?;
    shutdown.trigger();
    relay_failed_for_good(relay_task.await)?;
    if let Err(error) = flush_producer.flush(Duration::from_secs(5)).await {
        tracing::warn!(%error, "producer flush at shutdown failed; unacknowledged notes stay in the outbox");
    }
    tracing::info!("producer stopped");
    Ok(())
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
