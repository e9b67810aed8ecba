//! The intake's accept loop: plain TCP or TLS (with the configuration in force when each
//! connection arrives), HTTP/1.1 with a deadline on the handshake and on every request's headers,
//! each request tagged with what is known of its connection (peer address, verified client
//! certificate), and a graceful stop that lets requests in progress finish.
//!
//! Its own loop rather than `axum::serve`: the TLS handshake must run on the connection's task
//! (a client that stalls it must not hold up the others), and the client certificate of a
//! connection has to reach its requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rebound_service::{Shutdown, events};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::ConnectionInfo;
use crate::tls::client_certificate_name;

/// How long requests in progress get to finish once shutdown triggers.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);

/// What the accept loop needs besides the listener and the app.
#[derive(Debug, Clone)]
pub(crate) struct ListenerSettings {
    /// The TLS configuration in force, or `None` for plain HTTP.
    pub tls: Option<watch::Receiver<Arc<ServerConfig>>>,
    /// Deadline of the TLS handshake and of each request's headers.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` triggers, then waits (up to ten seconds) for the
/// requests in progress.
pub(crate) async fn serve(listener: TcpListener, app: Router, settings: ListenerSettings, shutdown: Shutdown) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, typically: pausing lets connections close.
                events::producer_connection_dropped("connection_error", "-", &error);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = settings.tls.as_ref().map(|config| Arc::clone(&config.borrow()));
        let app = app.clone();
        let header_timeout = settings.header_timeout;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => {
                    let info = ConnectionInfo {
                        peer,
                        client_certificate: None,
                    };
                    serve_connection(stream, info, app, header_timeout, watcher).await;
                }
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let client_certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(client_certificate_name);
                            let info = ConnectionInfo {
                                peer,
                                client_certificate,
                            };
                            serve_connection(stream, info, app, header_timeout, watcher).await;
                        }
                        Ok(Err(error)) => {
                            events::producer_connection_dropped("tls_handshake", &peer.to_string(), &error);
                        }
                        Err(elapsed) => {
                            events::producer_connection_dropped("slow_client", &peer.to_string(), &elapsed);
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACEFUL_STOP, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in progress after {GRACEFUL_STOP:?}; closing their connections");
    }
}

async fn serve_connection<S>(stream: S, info: ConnectionInfo, app: Router, header_timeout: Duration, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer: SocketAddr = info.peer;
    let tower_service = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(info.clone());
        tower_service.call(request)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection).await {
        let reason = if error.is_timeout() {
            "slow_client"
        } else {
            "connection_error"
        };
        events::producer_connection_dropped(reason, &peer.to_string(), &error);
    }
}
