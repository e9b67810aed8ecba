//! The operational HTTP endpoints every service can serve on `--metrics-listen`: `/metrics`
//! (Prometheus text format), `/healthz` (the process is alive) and `/readyz` (every readiness
//! check the service registered passes), plus the process-wide metrics recorder behind them,
//! which also holds `rebound_build_info` and the standard `process_*` metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Shutdown;

/// Flags of the operational endpoints, shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct OperationalArgs {
    /// Address of `/metrics`, `/healthz` and `/readyz` (off when not given), e.g. `127.0.0.1:9464`.
    #[arg(long, env = "REBOUND_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Named readiness checks a service keeps current; `/readyz` passes when all of them do.
#[derive(Debug, Default)]
pub struct Readiness {
    checks: Mutex<BTreeMap<&'static str, (bool, String)>>,
}

impl Readiness {
    /// Records the state of one check, with a short reason for people reading `/readyz`.
    pub fn set(&self, check: &'static str, ready: bool, detail: impl Into<String>) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.insert(check, (ready, detail.into()));
        }
    }

    /// Whether every check passes (false before any check is registered), and a report.
    pub fn report(&self) -> (bool, String) {
        let Ok(checks) = self.checks.lock() else {
            return (false, "readiness state unavailable\n".to_owned());
        };
        let mut report = String::new();
        for (check, (ready, detail)) in checks.iter() {
            report.push_str(&format!(
                "{check}: {} ({detail})\n",
                if *ready { "ok" } else { "failing" }
            ));
        }
        let ready = !checks.is_empty() && checks.values().all(|(ready, _)| *ready);
        (ready, report)
    }
}

/// Histogram buckets for latencies and lateness, in seconds: fine at the low end where the
/// targets are (tens of milliseconds), coarse up to the longest tier delays.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The process-wide Prometheus recorder, installed on first use. Later calls return the same
/// handle, so several services in one process (tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); then ours only
            // renders what it is given, which is still a valid, if empty, exposition.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[derive(Clone)]
struct EndpointState {
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
}

/// Serves the endpoints until `shutdown`; binding errors are returned at once.
pub async fn serve_operational_endpoints(
    listen: SocketAddr,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let state = EndpointState {
        metrics: metrics_handle(),
        readiness,
    };
    crate::events::build_info();
    let app = axum::Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(render_readiness))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "metrics and health endpoints listening");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "operational endpoints stopped");
        }
    }))
}

async fn render_metrics(State(state): State<EndpointState>) -> impl IntoResponse {
    crate::events::process_state();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render())
}

async fn render_readiness(State(state): State<EndpointState>) -> impl IntoResponse {
    let (ready, report) = state.readiness.report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check_and_at_least_one() {
        let readiness = Readiness::default();
        assert!(!readiness.report().0);
        readiness.set("kafka", true, "3 partitions assigned");
        readiness.set("sink", false, "last batch failed");
        let (ready, report) = readiness.report();
        assert!(!ready);
        assert!(report.contains("sink: failing (last batch failed)"), "{report}");
        readiness.set("sink", true, "last batch applied");
        assert!(readiness.report().0);
    }

    #[tokio::test]
    async fn endpoints_serve_metrics_health_and_readiness() {
        let readiness = Arc::new(Readiness::default());
        let shutdown = Shutdown::new();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = probe.local_addr().expect("address");
        drop(probe);
        let server = serve_operational_endpoints(address, Arc::clone(&readiness), shutdown.clone())
            .await
            .expect("serves");
        metrics::counter!("rebound_test_requests_total").increment(3);
        let base = format!("http://{address}");
        let metrics_text = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(metrics_text.contains("rebound_test_requests_total 3"), "{metrics_text}");
        assert!(
            metrics_text.contains(&format!(
                "rebound_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{metrics_text}"
        );
        let rss = metrics_text
            .lines()
            .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
            .and_then(|value| value.parse::<f64>().ok());
        assert!(
            rss.is_some_and(|bytes| bytes > 1_000_000.0),
            "RSS of this process: {metrics_text}"
        );
        assert_eq!(
            reqwest::get(format!("{base}/healthz")).await.expect("get").status(),
            200
        );
        assert_eq!(reqwest::get(format!("{base}/readyz")).await.expect("get").status(), 503);
        readiness.set("kafka", true, "assigned");
        assert_eq!(reqwest::get(format!("{base}/readyz")).await.expect("get").status(), 200);
        shutdown.trigger();
        server.await.expect("stops");
    }
}
