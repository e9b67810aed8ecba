//! A real HTTP server on loopback standing in for a webhook receiver: it records every request
//! and answers each with the status a test's script chooses, per note id and attempt.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct SinkRequest {
    /// `note_id` of the posted JSON.
    pub note_id: String,
    /// `version` of the posted JSON.
    pub version: i64,
    /// The `Idempotency-Key` header.
    pub idempotency_key: String,
    /// When it arrived, epoch milliseconds.
    pub received_at_ms: i64,
    /// The status the sink answered.
    pub status: u16,
}

type Script = dyn Fn(&str, usize) -> u16 + Send + Sync;

#[derive(Clone)]
struct SinkState {
    requests: Arc<Mutex<Vec<SinkRequest>>>,
    script: Arc<Script>,
}

/// The scripted sink. Dropping it does not stop the server; it lives until the test ends.
#[derive(Clone)]
pub struct ScriptedHttpSink {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<SinkRequest>>>,
}

impl std::fmt::Debug for ScriptedHttpSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ScriptedHttpSink")
            .field("address", &self.address)
            .finish()
    }
}

impl ScriptedHttpSink {
    /// Starts a server answering `script(note_id, attempt)`, where attempt counts that note
    /// id's requests from 1.
    pub async fn start(script: impl Fn(&str, usize) -> u16 + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = SinkState {
            requests: Arc::clone(&requests),
            script: Arc::new(script),
        };
        let app = axum::Router::new().route("/notes", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, requests }
    }

    /// The URL to pass as `--sink`.
    pub fn url(&self) -> String {
        format!("http://{}/notes", self.address)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SinkRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests so far for one note id.
    pub fn requests_for(&self, note_id: &str) -> Vec<SinkRequest> {
        self.requests()
            .into_iter()
            .filter(|request| request.note_id == note_id)
            .collect()
    }
}

async fn receive(State(state): State<SinkState>, headers: HeaderMap, body: String) -> StatusCode {
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let note_id = json["note_id"].as_str().unwrap_or_default().to_owned();
    let version = json["version"].as_i64().unwrap_or(-1);
    let mut requests = state.requests.lock().unwrap();
    let attempt = requests.iter().filter(|request| request.note_id == note_id).count() + 1;
    let status = (state.script)(&note_id, attempt);
    requests.push(SinkRequest {
        note_id,
        version,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        received_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0))
            .unwrap_or(0),
        status,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
