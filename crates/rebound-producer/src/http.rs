//! The producer's HTTP API: `POST /v1/notes` (202 only once the notes are durably in the
//! outbox), `GET /v1/outbox`, `GET /v1/flags`, `GET /healthz`, `GET /readyz`. Every `/v1/`
//! route passes `admission` first (credentials, rate, requests in flight); the size and time
//! limits of a request's body are `limits`' too.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rebound_service::trace_context::{TRACEPARENT, continue_trace, headers_with_traceparent, traceparent_of};
use rebound_service::{events, now_epoch_ms};
use serde_json::json;
use tokio::sync::watch;

use crate::ProducerError;
use crate::admission::{Admission, admit};
use crate::auth::Client;
use crate::flags::ResendFlags;
use crate::limits::{IntakeLimits, Refusal};
use crate::note_json::{CheckedNote, NoteRejection, parse_notes_body};
use crate::outbox::{NewEntry, Outbox};
use crate::relay::{RelayStatus, oldest_age_seconds};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The outbox notes are accepted into.
    pub outbox: Outbox,
    /// Current resend flags, for display.
    pub flags: watch::Receiver<ResendFlags>,
    /// Broker status from the relay.
    pub status: Arc<RelayStatus>,
    /// Body size, note count and body time limits (the largest note Kafka takes among them).
    pub limits: IntakeLimits,
}

/// Rejected notes listed by `GET /v1/outbox`, newest first.
const REJECTED_NOTES_LISTED: usize = 100;

/// The API's routes; the `/v1/` ones behind `admission`.
pub(crate) fn router(state: ApiState, admission: Arc<Admission>) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/notes", post(post_notes))
        .route("/v1/outbox", get(get_outbox))
        .route("/v1/flags", get(get_flags))
        .route_layer(axum::middleware::from_fn_with_state(admission, admit));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(get_ready))
        .merge(api)
        .with_state(state)
}

fn error_response(status: StatusCode, message: &str, problems: serde_json::Value) -> Response {
    (status, Json(json!({ "error": message, "problems": problems }))).into_response()
}

async fn post_notes(
    State(state): State<ApiState>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let refuse = |refusal: Refusal| refusal.respond(&client.to_string(), "/v1/notes");
    let limits = state.limits;
    // A declared length over the limit is refused before reading a byte of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes) {
        return refuse(Refusal::BodyTooLarge(limits.max_body_bytes));
    }
    // A client trickling its body cannot hold the request (and its place in flight) for long.
    let bytes = match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limits.max_body_bytes)).await
    {
        Ok(Ok(bytes)) => bytes,
        // Over the limit, or the connection broke mid-body; for a broken one the answer is
        // never read.
        Ok(Err(_)) => return refuse(Refusal::BodyTooLarge(limits.max_body_bytes)),
        Err(_) => return refuse(Refusal::SlowBody(limits.body_timeout)),
    };
    let notes = match parse_notes_body(&bytes) {
        Ok(notes) => notes,
        Err(problems) => {
            let malformed = problems
                .iter()
                .any(|(_, problem)| matches!(problem, NoteRejection::Malformed(_)));
            let status = if malformed {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let listed: Vec<serde_json::Value> = problems
                .iter()
                .map(|(index, problem)| json!({ "index": index, "message": problem.message() }))
                .collect();
            let summary = match &problems[0] {
                (Some(index), problem) => format!("note {index}: {}; nothing was accepted", problem.message()),
                (None, problem) => format!("{}; nothing was accepted", problem.message()),
            };
            return error_response(status, &summary, json!(listed));
        }
    };
    if notes.len() > limits.max_notes_per_request {
        return refuse(Refusal::TooManyNotes {
            count: notes.len(),
            limit: limits.max_notes_per_request,
        });
    }
    // A client that traces its requests sends `traceparent`; each note's trace continues it.
    let request_trace = headers_with_traceparent(headers.get(TRACEPARENT).and_then(|value| value.to_str().ok()));
    let mut entries = Vec::with_capacity(notes.len());
    // A note Kafka can never take is refused here: acknowledged, it would wait in the outbox
    // forever and hold back every later version of its note.
    let mut too_large = Vec::new();
    let mut accepted = Vec::with_capacity(notes.len());
    for (index, CheckedNote { note, value }) in notes.into_iter().enumerate() {
        let span = rebound_service::trace_context::record_span(
            || tracing::info_span!("producer.accept", note_id = %note.note_id, version = note.version),
        );
        continue_trace(&span, &request_trace);
        if let Err(refusal) = limits.record_limit.check(&note.note_id, value.len()) {
            too_large.push(json!({
                "index": index,
                "message": format!("note {:?} version {} is too large for Kafka: {refusal}", note.note_id, note.version),
            }));
            continue;
        }
        accepted.push(json!({ "note_id": note.note_id, "version": note.version }));
        entries.push(NewEntry {
            note_id: note.note_id,
            version: note.version,
            value,
            traceparent: traceparent_of(&span),
        });
    }
    if let Some(first) = too_large.first() {
        let summary = format!(
            "note {}: {}; nothing was accepted",
            first["index"],
            first["message"].as_str().unwrap_or_default()
        );
        return refuse(Refusal::NotesTooLarge {
            summary,
            problems: too_large,
        });
    }
    match state.outbox.append(entries, now_epoch_ms()).await {
        Ok(_) => {
            events::producer_notes_accepted(accepted.len());
            let count = accepted.len();
            (
                StatusCode::ACCEPTED,
                Json(json!({ "accepted": accepted, "count": count })),
            )
                .into_response()
        }
        Err(error @ ProducerError::AcceptNotes { .. }) => {
            let retry_after = state.flags.borrow().retry_interval_seconds.clamp(1, 60);
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{error}; nothing was accepted, retry later"),
                json!([]),
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Err(error) => {
            tracing::error!(%error, "outbox append failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("{error}; nothing was accepted"),
                json!([]),
            )
        }
    }
}

async fn get_outbox(State(state): State<ApiState>) -> Response {
    let flags = *state.flags.borrow();
    let (rejected_count, rejected) = match state.outbox.rejected_notes(REJECTED_NOTES_LISTED).await {
        Ok(listing) => listing,
        Err(error) => {
            tracing::error!(%error, "cannot list rejected notes");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string(), json!([]));
        }
    };
    Json(json!({
        "pending": state.outbox.pending_notes(),
        "pending_bytes": state.outbox.pending_bytes(),
        "oldest_age_seconds": oldest_age_seconds(&state.outbox).await,
        "broker_reachable": state.status.broker_reachable(),
        "flags": flags,
        "rejected_count": rejected_count,
        "rejected": rejected,
    }))
    .into_response()
}

async fn get_flags(State(state): State<ApiState>) -> Response {
    let flags = *state.flags.borrow();
    Json(flags).into_response()
}

async fn get_ready(State(state): State<ApiState>) -> Response {
    if state.status.broker_reachable() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "kafka unreachable; notes are kept in the outbox\n",
        )
            .into_response()
    }
}
