//! What every `/v1/` request passes before its handler runs, in this order: credentials (401),
//! the client's rate (429), a place among the requests in flight (503). The handler then finds
//! the authenticated `Client` in the request's extensions. `/healthz` and `/readyz` do not pass
//! here: probes need no credentials and are never limited.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{Authenticator, ConnectionInfo};
use crate::limits::{Refusal, RequestGate};

/// The checks of admission.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Credentials.
    pub authenticator: Authenticator,
    /// Rate and requests in flight.
    pub gate: RequestGate,
}

/// The middleware: refuses, or runs the handler with a place in flight held until it answers.
pub(crate) async fn admit(State(admission): State<Arc<Admission>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    // Every connection the listener accepts carries its `ConnectionInfo`; a request without one
    // (a router served some other way) is treated as coming from nowhere in particular.
    let connection = request
        .extensions()
        .get::<ConnectionInfo>()
        .cloned()
        .unwrap_or(ConnectionInfo {
            peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            client_certificate: None,
        });
    let client = match admission.authenticator.authenticate(request.headers(), &connection) {
        Ok(client) => client,
        Err(failure) => return Refusal::Unauthenticated(failure).respond(&connection.peer.to_string(), &path),
    };
    let permit = match admission.gate.admit(&client) {
        Ok(permit) => permit,
        Err(refusal) => return refusal.respond(&client.to_string(), &path),
    };
    request.extensions_mut().insert(client);
    let response = next.run(request).await;
    drop(permit);
    response
}
