//! `rebound dlq watch`: a long-running check of the DLQ's backlog (dead letters not yet
//! redriven) that exports it as metrics and, for deployments without Prometheus, posts a
//! Slack-compatible message when the backlog crosses a threshold and once more when it
//! recovers, never repeating itself in between.

use std::time::Duration;

use rebound_kafka::{KafkaArgs, fetch_dlq_backlog};
use rebound_service::{
    OperationalArgs, Readiness, Shutdown, events, now_epoch_ms, parse_duration_flag, serve_operational_endpoints,
};
use std::sync::Arc;

use super::DlqTopicArgs;

/// Flags of `rebound dlq watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqWatchArgs {
    /// Which DLQ.
    #[command(flatten)]
    pub topics: DlqTopicArgs,

    /// Backlog (dead letters not yet redriven) at or above which the DLQ needs attention.
    #[arg(long, env = "REBOUND_DLQ_THRESHOLD", default_value_t = 100)]
    pub threshold: i64,

    /// Slack-compatible incoming-webhook URL to notify (treated as a secret: never logged).
    #[arg(long, env = "REBOUND_DLQ_WEBHOOK", hide_env_values = true)]
    pub webhook: Option<String>,

    /// How often to check the backlog.
    #[arg(long, env = "REBOUND_DLQ_WATCH_INTERVAL", default_value = "30s", value_parser = parse_duration_flag)]
    pub interval: Duration,

    /// Metrics and health endpoints.
    #[command(flatten)]
    pub operational: OperationalArgs,
}

/// What a check decided about notifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdChange {
    /// The backlog reached the threshold while it was fine.
    Crossed,
    /// The backlog fell under the threshold while it was alerting.
    Recovered,
}

/// The notification rule: only a change of side is announced, so a backlog that stays high
/// (or low) produces no further messages.
pub fn threshold_change(alerting: bool, backlog: i64, threshold: i64) -> Option<ThresholdChange> {
    match (alerting, backlog >= threshold) {
        (false, true) => Some(ThresholdChange::Crossed),
        (true, false) => Some(ThresholdChange::Recovered),
        _ => None,
    }
}

/// The Slack message for a change.
pub fn slack_message(
    change: ThresholdChange,
    dlq: &str,
    backlog: i64,
    threshold: i64,
    oldest_age_seconds: f64,
) -> serde_json::Value {
    let text = match change {
        ThresholdChange::Crossed => format!(
            ":rotating_light: DLQ `{dlq}` holds {backlog} dead letters not yet redriven (threshold {threshold}); \
             the oldest is {}. See why with `rebound dlq stats --dlq-topic {dlq}`.",
            describe_age(oldest_age_seconds)
        ),
        ThresholdChange::Recovered => format!(
            ":white_check_mark: DLQ `{dlq}` is back under its threshold: {backlog} dead letters not yet redriven (threshold {threshold})."
        ),
    };
    serde_json::json!({ "text": text })
}

fn describe_age(seconds: f64) -> String {
    let whole = Duration::from_secs(seconds.max(0.0) as u64);
    format!("{} old", humantime::format_duration(whole))
}

/// Watches until `shutdown`. A webhook that fails is tried again at the next check, so a
/// change is never lost to a network blip, and never announced twice.
pub async fn watch_dead_letters(kafka: &KafkaArgs, args: &DlqWatchArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.threshold >= 1,
        "invalid --threshold: {} (at least 1)",
        args.threshold
    );
    let dlq = args.topics.dlq();
    let ledger = args.topics.ledger();
    let readiness = Arc::new(Readiness::default());
    readiness.set("kafka", false, "no check yet");
    if let Some(listen) = args.operational.metrics_listen {
        serve_operational_endpoints(listen, Arc::clone(&readiness), shutdown.clone()).await?;
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let mut alerting = false;
    let mut ticker = tokio::time::interval(args.interval);
    tracing::info!(
        dlq,
        threshold = args.threshold,
        notify = args.webhook.is_some(),
        "watching the dlq"
    );
    loop {
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let backlog = match fetch_dlq_backlog(kafka, &dlq, &ledger, args.topics.broker_wait.timeout).await {
            Ok(backlog) => backlog,
            Err(error) => {
                readiness.set("kafka", false, error.to_string());
                tracing::warn!(%error, dlq, "dlq check failed");
                continue;
            }
        };
        readiness.set(
            "kafka",
            true,
            format!("{} dead letters not yet redriven", backlog.not_replayed),
        );
        #[expect(clippy::cast_precision_loss, reason = "ages in ms are far below 2^52")]
        let oldest_age_seconds = backlog
            .oldest_not_replayed_timestamp_ms
            .map_or(0.0, |timestamp| (now_epoch_ms() - timestamp).max(0) as f64 / 1000.0);
        events::dlq_backlog(&dlq, backlog.not_replayed, oldest_age_seconds);
        let Some(change) = threshold_change(alerting, backlog.not_replayed, args.threshold) else {
            continue;
        };
        let delivered = match &args.webhook {
            None => true,
            Some(url) => {
                let message = slack_message(change, &dlq, backlog.not_replayed, args.threshold, oldest_age_seconds);
                match client
                    .post(url)
                    .json(&message)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                {
                    Ok(_) => true,
                    Err(error) => {
                        // The URL carries the webhook's token: log the failure without it.
                        tracing::warn!(error = %error.without_url(), "dlq notification failed; will retry at the next check");
                        false
                    }
                }
            }
        };
        if delivered {
            alerting = change == ThresholdChange::Crossed;
            events::dlq_notified(&dlq, alerting, backlog.not_replayed, args.threshold);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_of_side_is_announced() {
        assert_eq!(threshold_change(false, 99, 100), None);
        assert_eq!(threshold_change(false, 100, 100), Some(ThresholdChange::Crossed));
        assert_eq!(threshold_change(true, 500, 100), None);
        assert_eq!(threshold_change(true, 99, 100), Some(ThresholdChange::Recovered));
        assert_eq!(threshold_change(false, 0, 100), None);
    }

    #[test]
    fn messages_are_slack_compatible_and_name_the_dlq() {
        let crossed = slack_message(ThresholdChange::Crossed, "dlq", 150, 100, 7200.0);
        let text = crossed["text"].as_str().expect("text");
        assert!(
            text.contains("`dlq` holds 150") && text.contains("threshold 100") && text.contains("2h"),
            "{text}"
        );
        let recovered = slack_message(ThresholdChange::Recovered, "dlq", 3, 100, 0.0);
        assert!(recovered["text"].as_str().expect("text").contains("back under"));
    }
}
