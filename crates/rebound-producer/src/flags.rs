//! Feature flags for resending pending notes, read from a JSON file (re-read when it changes)
//! or an HTTP URL (polled), published to the relay through a watch channel.
//!
//! Format: `{"features": {"retry_pending_notes": true, "retry_interval_seconds": 120}}`.
//! Unknown keys are ignored with a warning; an invalid document keeps the last good flags.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::watched_files::{FilesLook, WatchedFiles};

/// The resend flags in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResendFlags {
    /// When false, notes already pending (failed once, or left from an earlier run) are not
    /// sent again; new notes still get their first attempt and everything stays in the outbox.
    pub retry_pending_notes: bool,
    /// Cadence of resends, in seconds: the cap of the exponential backoff between rounds.
    pub retry_interval_seconds: u64,
}

impl Default for ResendFlags {
    fn default() -> Self {
        Self {
            retry_pending_notes: true,
            retry_interval_seconds: 120,
        }
    }
}

impl ResendFlags {
    /// The resend interval as a duration (at least one second).
    pub fn retry_interval(&self) -> Duration {
        Duration::from_secs(self.retry_interval_seconds.max(1))
    }
}

/// Parses a flags document, starting from `current` so that absent keys keep their values.
/// Returns the new flags and warnings about keys that were ignored.
pub fn parse_flags(document: &[u8], current: ResendFlags) -> Result<(ResendFlags, Vec<String>), String> {
    let value: Value = serde_json::from_slice(document).map_err(|error| format!("not valid JSON: {error}"))?;
    let Some(features) = value.get("features") else {
        return Err("missing the \"features\" object".to_owned());
    };
    let Value::Object(features) = features else {
        return Err("\"features\" is not an object".to_owned());
    };
    let mut flags = current;
    let mut warnings = Vec::new();
    if let Value::Object(top) = &value {
        for key in top.keys().filter(|key| *key != "features") {
            warnings.push(format!("ignoring unknown top-level key {key:?}"));
        }
    }
    for (key, value) in features {
        match key.as_str() {
            "retry_pending_notes" => {
                flags.retry_pending_notes = value
                    .as_bool()
                    .ok_or_else(|| format!("\"retry_pending_notes\" must be true or false, found {value}"))?;
            }
            "retry_interval_seconds" => {
                flags.retry_interval_seconds = value.as_u64().filter(|seconds| *seconds >= 1).ok_or_else(|| {
                    format!("\"retry_interval_seconds\" must be a whole number of at least 1, found {value}")
                })?;
            }
            other => warnings.push(format!("ignoring unknown feature {other:?}")),
        }
    }
    Ok((flags, warnings))
}

/// Where flags come from.
#[derive(Debug, Clone)]
pub enum FlagsSource {
    /// Defaults only.
    Defaults,
    /// A JSON file, checked for changes every `poll` interval.
    File {
        /// The file.
        path: PathBuf,
        /// How often to look for a change.
        poll: Duration,
    },
    /// A URL answering the JSON document, fetched every `poll` interval.
    Url {
        /// The URL.
        url: String,
        /// How often to fetch it.
        poll: Duration,
    },
}

/// Loads the initial flags and keeps them current in the background. The receiver always holds
/// the last good flags.
pub async fn watch_flags(source: FlagsSource) -> watch::Receiver<ResendFlags> {
    let (sender, receiver) = watch::channel(ResendFlags::default());
    match source {
        FlagsSource::Defaults => {
            tracing::info!(flags = ?ResendFlags::default(), "resend flags: defaults");
            // Keep the sender alive so receivers never see a closed channel.
            tokio::spawn(async move {
                sender.closed().await;
            });
        }
        FlagsSource::File { path, poll } => {
            let origin = path.display().to_string();
            let mut files = WatchedFiles::new(vec![path]);
            let mut last_seen: Option<Vec<u8>> = None;
            apply_file_look(&origin, files.look().await, &sender, &mut last_seen);
            files.keep_watching(poll, sender, move |look, sender| {
                apply_file_look(&origin, look, sender, &mut last_seen);
            });
        }
        FlagsSource::Url { url, poll } => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            let mut last_seen: Option<Vec<u8>> = None;
            reload_url(&client, &url, &sender, &mut last_seen).await;
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(poll);
                loop {
                    ticker.tick().await;
                    if sender.is_closed() {
                        return;
                    }
                    reload_url(&client, &url, &sender, &mut last_seen).await;
                }
            });
        }
    }
    receiver
}

fn apply_file_look(
    origin: &str,
    look: FilesLook,
    sender: &watch::Sender<ResendFlags>,
    last_seen: &mut Option<Vec<u8>>,
) {
    match look {
        FilesLook::Unchanged => {}
        FilesLook::Changed(mut contents) => apply_document(origin, contents.remove(0), sender, last_seen),
        FilesLook::Unreadable { error, .. } => {
            tracing::warn!(path = origin, %error, flags = ?*sender.borrow(), "cannot read flags file; using the last good flags");
        }
    }
}

async fn reload_url(
    client: &reqwest::Client,
    url: &str,
    sender: &watch::Sender<ResendFlags>,
    last_seen: &mut Option<Vec<u8>>,
) {
    let fetched = async {
        let response = client.get(url).send().await?.error_for_status()?;
        response.bytes().await
    }
    .await;
    match fetched {
        // The URL may carry a token: it is logged redacted, and reqwest's errors (which quote
        // the whole URL) without it.
        Ok(document) => apply_document(
            &rebound_service::redact::redact_url(url),
            document.to_vec(),
            sender,
            last_seen,
        ),
        Err(error) => {
            let error = error.without_url();
            tracing::warn!(%error, flags = ?*sender.borrow(), "cannot fetch flags; keeping the last good flags")
        }
    }
}

/// Applies a fetched document if it changed since the last look.
fn apply_document(
    origin: &str,
    document: Vec<u8>,
    sender: &watch::Sender<ResendFlags>,
    last_seen: &mut Option<Vec<u8>>,
) {
    if last_seen.as_deref() == Some(document.as_slice()) {
        return;
    }
    let current = *sender.borrow();
    match parse_flags(&document, current) {
        Ok((flags, warnings)) => {
            for warning in warnings {
                tracing::warn!(origin, "{warning}");
            }
            if flags != current || last_seen.is_none() {
                tracing::info!(
                    origin,
                    retry_pending_notes = flags.retry_pending_notes,
                    retry_interval_seconds = flags.retry_interval_seconds,
                    "resend flags loaded"
                );
            }
            sender.send_replace(flags);
        }
        Err(reason) => {
            tracing::warn!(origin, %reason, flags = ?current, "invalid flags document; keeping the last good flags")
        }
    }
    *last_seen = Some(document);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_format_parses() {
        let (flags, warnings) = parse_flags(
            br#"{"features": {"retry_pending_notes": false, "retry_interval_seconds": 30}}"#,
            ResendFlags::default(),
        )
        .expect("valid");
        assert_eq!(
            flags,
            ResendFlags {
                retry_pending_notes: false,
                retry_interval_seconds: 30
            }
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn unknown_keys_are_ignored_with_a_warning_and_absent_keys_keep_their_value() {
        let current = ResendFlags {
            retry_pending_notes: false,
            retry_interval_seconds: 7,
        };
        let (flags, warnings) =
            parse_flags(br#"{"features": {"dark_mode": true}, "version": 2}"#, current).expect("valid");
        assert_eq!(flags, current);
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn invalid_documents_are_refused_with_a_reason() {
        for (document, expected) in [
            (&br#"{"features": {"retry_pending_notes": "yes"}}"#[..], "true or false"),
            (br#"{"features": {"retry_interval_seconds": 0}}"#, "at least 1"),
            (br#"{"flags": {}}"#, "missing"),
            (b"{", "not valid JSON"),
        ] {
            let reason = parse_flags(document, ResendFlags::default()).expect_err("invalid");
            assert!(reason.contains(expected), "{reason}");
        }
    }

    #[tokio::test]
    async fn flags_from_a_url_are_polled_and_a_failing_url_keeps_the_last_good_flags() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        let document = Arc::new(Mutex::new((
            200_u16,
            r#"{"features": {"retry_pending_notes": false}}"#.to_owned(),
        )));
        let polls = Arc::new(AtomicUsize::new(0));
        let served = Arc::clone(&document);
        let counted = Arc::clone(&polls);
        let app = axum::Router::new().route(
            "/flags",
            axum::routing::get(move || {
                let served = Arc::clone(&served);
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    let (status, body) = served.lock().expect("lock").clone();
                    (axum::http::StatusCode::from_u16(status).expect("status"), body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut receiver = watch_flags(FlagsSource::Url {
            url: format!("http://{address}/flags"),
            poll: Duration::from_millis(20),
        })
        .await;
        assert!(!receiver.borrow().retry_pending_notes, "fetched before returning");
        *document.lock().expect("lock") = (500, "down".to_owned());
        *document.lock().expect("lock") = (200, r#"{"features": {"retry_pending_notes": true}}"#.to_owned());
        tokio::time::timeout(
            Duration::from_secs(5),
            receiver.wait_for(|flags| flags.retry_pending_notes),
        )
        .await
        .expect("polled in time")
        .expect("sender alive");
        *document.lock().expect("lock") = (500, "down".to_owned());
        // Three failed polls later the last good flags still hold.
        let polls_then = polls.load(Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), async {
            while polls.load(Ordering::SeqCst) < polls_then + 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("polled three more times");
        assert!(receiver.borrow().retry_pending_notes);
    }

    #[tokio::test]
    async fn a_changed_file_is_picked_up_and_a_broken_one_keeps_the_last_good_flags() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("flags.json");
        std::fs::write(&path, br#"{"features": {"retry_pending_notes": false}}"#).expect("write");
        let mut receiver = watch_flags(FlagsSource::File {
            path: path.clone(),
            poll: Duration::from_millis(20),
        })
        .await;
        assert!(!receiver.borrow().retry_pending_notes, "loaded before returning");
        std::fs::write(
            &path,
            br#"{"features": {"retry_pending_notes": true, "retry_interval_seconds": 5}}"#,
        )
        .expect("write");
        tokio::time::timeout(
            Duration::from_secs(5),
            receiver.wait_for(|flags| flags.retry_pending_notes),
        )
        .await
        .expect("reloaded in time")
        .expect("sender alive");
        std::fs::write(&path, b"{ broken").expect("write");
        // A broken file is read (and refused) on the next poll; then a good one wins again.
        std::fs::write(&path, br#"{"features": {"retry_interval_seconds": 9}}"#).expect("write");
        tokio::time::timeout(
            Duration::from_secs(5),
            receiver.wait_for(|flags| flags.retry_interval_seconds == 9),
        )
        .await
        .expect("reloaded in time")
        .expect("sender alive");
        assert!(receiver.borrow().retry_pending_notes, "absent key kept its value");
    }
}
