//! Running `rebound-producer serve` as a real process, and talking to its HTTP API.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rebound_testkit::{free_local_port, wait_for_http_ok};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// A producer process and its API address.
pub struct ProducerProcess {
    pub child: Child,
    pub base_url: String,
}

impl ProducerProcess {
    /// Starts `serve` with the given brokers, outbox and extra flags, and waits for `/healthz`.
    pub async fn serve(brokers: &str, outbox: &Path, port: Option<u16>, extra: &[&str]) -> Self {
        let port = port.unwrap_or_else(free_local_port);
        let child = spawn_serve(brokers, outbox, port, extra);
        let base_url = format!("http://127.0.0.1:{port}");
        wait_for_http_ok(&format!("{base_url}/healthz"), Duration::from_secs(30)).await;
        Self { child, base_url }
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        self.child.wait().await.expect("reaped");
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(self) {
        terminate_gracefully(self.child).await;
    }

    /// POSTs a JSON body to `/v1/notes`.
    pub async fn post_notes(&self, body: &Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/notes", self.base_url))
            .json(body)
            .send()
            .await
            .expect("request answered");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs a JSON document.
    pub async fn get_json(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.base_url))
            .await
            .expect("request answered")
            .json()
            .await
            .expect("json body")
    }
}

/// A note as clients post it.
pub fn note_json(note_id: &str, version: i64) -> Value {
    json!({
        "note_id": note_id,
        "user_id": "user-1",
        "device_id": "phone",
        "version": version,
        "title": format!("{note_id} v{version}"),
        "body": "written while the broker was away ✈",
        "tags": ["offline"],
        "updated_at": "2026-11-28T09:00:00Z",
    })
}

/// Writes a flags file.
pub fn write_flags(path: &Path, retry_pending_notes: bool, retry_interval_seconds: u64) {
    let document = json!({"features": {"retry_pending_notes": retry_pending_notes, "retry_interval_seconds": retry_interval_seconds}});
    std::fs::write(path, document.to_string()).expect("flags written");
}

/// Spawns `rebound-producer serve` on `127.0.0.1:port` with the given brokers, outbox and extra
/// flags; killed when the handle drops. The caller waits for it to answer.
pub fn spawn_serve(brokers: &str, outbox: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rebound-producer"))
        .args(["--brokers", brokers, "serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--outbox-dir")
        .arg(outbox)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("producer starts")
}

/// Sends SIGTERM to a producer process and asserts it exits cleanly within 30 s.
pub async fn terminate_gracefully(mut child: Child) {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s")
        .expect("reaped");
    assert!(exit.success(), "graceful exit: {exit}");
}
