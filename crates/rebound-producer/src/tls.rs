//! TLS for the intake (rustls): the server configuration built from `--tls-cert`, `--tls-key`
//! and, for mutual TLS, `--tls-client-ca`, rebuilt whenever one of the files changes so that a
//! certificate rotates without a restart. Each new connection takes the configuration in force
//! when it arrives; connections already open keep theirs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::watch;

use crate::ProducerError;
use crate::watched_files::{FilesLook, WatchedFiles};

/// The files of the intake's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificates of the CAs client certificates are checked against; `None`: no client
    /// certificates are asked for.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths
    }

    fn shown(&self) -> String {
        self.paths()
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Builds the server configuration from the files' contents (`cert`, `key`, then the client
/// CA if any); an error names the file and the problem.
fn server_config(contents: &[Vec<u8>]) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&contents[0])
        .collect::<Result<_, _>>()
        .map_err(|error| format!("--tls-cert is not a PEM certificate chain: {error}"))?;
    if certificates.is_empty() {
        return Err("--tls-cert holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(&contents[1])
        .map_err(|error| format!("--tls-key is not a PEM private key: {error}"))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("no TLS protocol version available: {error}"))?;
    let builder = match contents.get(2) {
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(client_ca) {
                let certificate =
                    certificate.map_err(|error| format!("--tls-client-ca is not a PEM certificate list: {error}"))?;
                roots
                    .add(certificate)
                    .map_err(|error| format!("--tls-client-ca holds an unusable certificate: {error}"))?;
            }
            if roots.is_empty() {
                return Err("--tls-client-ca holds no certificate".to_owned());
            }
            // A connection without a client certificate is let through the handshake and
            // refused per request (401), so that /healthz and /readyz stay open and a client
            // gets an answer that names the problem rather than a handshake alert.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(|error| format!("--tls-client-ca cannot verify clients: {error}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    check_key_matches(&provider, &certificates, &key)?;
    let mut config = builder
        .with_single_cert(certificates, key)
        .map_err(|error| format!("--tls-cert and --tls-key do not make a usable pair: {error}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Refuses a key that is not the certificate's: during a rotation the certificate may be
/// replaced before the key, and serving that pair would fail every handshake.
fn check_key_matches(
    provider: &CryptoProvider,
    certificates: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), String> {
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|error| format!("--tls-key is not a usable private key: {error}"))?;
    rustls::sign::CertifiedKey::new(certificates.to_vec(), signing_key)
        .keys_match()
        .map_err(|error| format!("--tls-key is not the key of --tls-cert's certificate: {error}"))
}

/// The name a verified client certificate goes by in logs, metrics and the rate limit: the
/// start of its SHA-256 fingerprint.
pub(crate) fn client_certificate_name(certificate: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate.as_ref());
    format!("client-cert:{}", hex::encode(&digest.as_ref()[..8]))
}

/// Loads the TLS files (refusing to start on unreadable or invalid ones) and rebuilds the
/// configuration whenever one of them changes; files that turn unreadable or invalid keep the
/// last good configuration and are reported.
pub(crate) async fn watch_tls(
    files: TlsFiles,
    poll: Duration,
) -> Result<watch::Receiver<Arc<ServerConfig>>, ProducerError> {
    let shown = files.shown();
    let mut watched = WatchedFiles::new(files.paths());
    let initial = match watched.look().await {
        FilesLook::Changed(contents) => server_config(&contents),
        FilesLook::Unreadable { path, error } => Err(format!("cannot read {}: {error}", path.display())),
        FilesLook::Unchanged => Err("not read".to_owned()),
    }
    .map_err(|reason| ProducerError::LoadIntakeFile {
        what: "--tls-cert, --tls-key, --tls-client-ca",
        path: shown.clone(),
        reason,
    })?;
    tracing::info!(files = %shown, "tls certificate loaded");
    let (sender, receiver) = watch::channel(initial);
    watched.keep_watching(poll, sender, move |look, sender| match look {
        FilesLook::Changed(contents) => match server_config(&contents) {
            Ok(config) => {
                tracing::info!(files = %shown, "tls certificate reloaded");
                sender.send_replace(config);
            }
            Err(reason) => rebound_service::events::producer_intake_reload_failed("tls", &shown, &reason),
        },
        FilesLook::Unreadable { path, error } => rebound_service::events::producer_intake_reload_failed(
            "tls",
            &path.display().to_string(),
            &error.to_string(),
        ),
        FilesLook::Unchanged => {}
    });
    Ok(receiver)
}
