//! The intake's security and limit flags of `serve` (authentication, TLS, rate and size limits,
//! slow-client timeouts) and the validated settings they turn into.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use rebound_service::parse_duration_flag;

use crate::ProducerError;
use crate::limits::{IntakeLimits, RateLimit};
use crate::record_limit::RecordSizeLimit;
use crate::tls::TlsFiles;

/// Intake flags of `rebound-producer serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct IntakeArgs {
    /// File of accepted bearer tokens: `NAME:SHA256-HEX` or a bare token per line, re-read when
    /// it changes. Requests to /v1/ without one of them get 401.
    #[arg(long, env = "REBOUND_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// PEM certificate chain of the HTTPS listener (with --tls-key; re-read when it changes).
    #[arg(long, env = "REBOUND_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "REBOUND_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates a client certificate is checked against; a verified client
    /// certificate authenticates like a token (mutual TLS; needs --tls-cert).
    #[arg(long, env = "REBOUND_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Allow a listen address other than loopback without --auth-tokens-file or
    /// --tls-client-ca, so that anyone who reaches it can write notes.
    #[arg(long, env = "REBOUND_INSECURE_LISTEN")]
    pub insecure_listen: bool,

    /// How often the tokens file and the TLS files are checked for changes.
    #[arg(long, env = "REBOUND_INTAKE_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration_flag)]
    pub intake_reload_interval: Duration,

    /// Requests per second allowed to each client (token, client certificate, or address when
    /// no credentials are configured); over it: 429 with Retry-After. 0: no limit.
    #[arg(long, env = "REBOUND_RATE_LIMIT_PER_SECOND", default_value_t = 0)]
    pub rate_limit_per_second: u32,

    /// Requests a client may send at once above its rate (default: the rate).
    #[arg(long, env = "REBOUND_RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,

    /// Most requests to /v1/ handled at once; more: 503 with Retry-After.
    #[arg(
        long,
        env = "REBOUND_MAX_REQUESTS_IN_FLIGHT",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_requests_in_flight: u32,

    /// Most notes in one request (more: 413).
    #[arg(
        long,
        env = "REBOUND_MAX_NOTES_PER_REQUEST",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_notes_per_request: u32,

    /// How long a client gets for the TLS handshake and for each request's headers (and the
    /// longest an idle connection stays open).
    #[arg(long, env = "REBOUND_REQUEST_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration_flag)]
    pub request_header_timeout: Duration,

    /// How long a client gets to send a request's whole body (longer: 408).
    #[arg(long, env = "REBOUND_REQUEST_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration_flag)]
    pub request_body_timeout: Duration,
}

/// The validated intake settings of `serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeConfig {
    /// The bearer tokens file, if tokens are accepted.
    pub auth_tokens_file: Option<PathBuf>,
    /// The TLS files, if the listener speaks HTTPS.
    pub tls: Option<TlsFiles>,
    /// How often the tokens and TLS files are checked for changes.
    pub reload_interval: Duration,
    /// Whether the intake serves a non-loopback address without credentials.
    pub insecure_listen: bool,
    /// Sizes, rates and timeouts.
    pub limits: IntakeLimits,
}

impl IntakeConfig {
    /// Whether requests must carry credentials.
    pub fn authenticates(&self) -> bool {
        self.auth_tokens_file.is_some() || self.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some())
    }
}

impl IntakeArgs {
    /// Validates the flags for a listener on `listen`.
    pub(crate) fn into_config(
        self,
        listen: SocketAddr,
        max_body_bytes: usize,
        record_limit: RecordSizeLimit,
    ) -> Result<IntakeConfig, ProducerError> {
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca,
            }),
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(invalid(
                    "--tls-client-ca",
                    "client certificates need TLS: give --tls-cert and --tls-key too",
                ));
            }
            (None, None) => None,
            (Some(_), None) => return Err(invalid("--tls-key", "--tls-cert needs its key")),
            (None, Some(_)) => return Err(invalid("--tls-cert", "--tls-key needs its certificate")),
        };
        for (flag, duration) in [
            ("--intake-reload-interval", self.intake_reload_interval),
            ("--request-header-timeout", self.request_header_timeout),
            ("--request-body-timeout", self.request_body_timeout),
        ] {
            if duration.is_zero() {
                return Err(invalid(flag, "must be above 0"));
            }
        }
        let rate_limit = match NonZeroU32::new(self.rate_limit_per_second) {
            Some(per_second) => Some(RateLimit {
                per_second,
                burst: self.rate_limit_burst.and_then(NonZeroU32::new).unwrap_or(per_second),
            }),
            None if self.rate_limit_burst.is_some() => {
                return Err(invalid(
                    "--rate-limit-burst",
                    "needs a rate: give --rate-limit-per-second too",
                ));
            }
            None => None,
        };
        let config = IntakeConfig {
            auth_tokens_file: self.auth_tokens_file,
            tls,
            reload_interval: self.intake_reload_interval,
            insecure_listen: self.insecure_listen,
            limits: IntakeLimits {
                max_body_bytes,
                max_notes_per_request: self.max_notes_per_request as usize,
                record_limit,
                body_timeout: self.request_body_timeout,
                header_timeout: self.request_header_timeout,
                max_requests_in_flight: self.max_requests_in_flight as usize,
                rate_limit,
            },
        };
        // An intake without credentials is only for this machine unless the operator says
        // otherwise: a note written by anyone who can reach the port is a note in every sink.
        if !config.authenticates() && !listen.ip().is_loopback() && !config.insecure_listen {
            return Err(invalid(
                "--listen",
                &format!(
                    "{listen} is reachable from other machines but the intake has no credentials: give --auth-tokens-file or --tls-client-ca, or --insecure-listen to accept anyone"
                ),
            ));
        }
        Ok(config)
    }
}

fn invalid(flag: &str, reason: &str) -> ProducerError {
    ProducerError::InvalidFlag {
        flag: flag.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::{ModeConfig, ProducerArgs};

    use super::*;

    fn intake(flags: &[&str]) -> Result<IntakeConfig, ProducerError> {
        let mut argv = vec!["rebound-producer", "serve"];
        argv.extend_from_slice(flags);
        match ProducerArgs::parse_from(argv).into_config()?.mode {
            ModeConfig::Serve(serve) => Ok(*serve.intake),
            _ => unreachable!("parsed serve"),
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = intake(&[]).expect("valid");
        assert!(!config.authenticates(), "loopback needs no credentials");
        assert_eq!(config.tls, None);
        assert_eq!(config.reload_interval, Duration::from_secs(2));
        assert_eq!(config.limits.max_body_bytes, 1 << 20);
        assert_eq!(config.limits.max_notes_per_request, 1000);
        assert_eq!(config.limits.max_requests_in_flight, 256);
        assert_eq!(config.limits.rate_limit, None);
        assert_eq!(config.limits.header_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.body_timeout, Duration::from_secs(30));
        let rated = intake(&["--rate-limit-per-second", "20"]).expect("valid");
        assert_eq!(
            rated
                .limits
                .rate_limit
                .map(|rate| (rate.per_second.get(), rate.burst.get())),
            Some((20, 20)),
            "the burst defaults to the rate"
        );
    }

    #[test]
    fn a_non_loopback_listener_needs_credentials_or_insecure_listen() {
        let error = intake(&["--listen", "0.0.0.0:8080"])
            .expect_err("no credentials")
            .to_string();
        assert!(
            error.contains("--listen") && error.contains("--insecure-listen"),
            "{error}"
        );
        assert!(intake(&["--listen", "0.0.0.0:8080", "--insecure-listen"]).is_ok());
        assert!(intake(&["--listen", "[::1]:8080"]).is_ok(), "IPv6 loopback");
        let tokens = intake(&["--listen", "0.0.0.0:8080", "--auth-tokens-file", "tokens"]).expect("valid");
        assert!(tokens.authenticates());
        let mutual = intake(&[
            "--listen",
            "10.0.0.1:8443",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ])
        .expect("valid");
        assert!(mutual.authenticates());
        // TLS alone encrypts but does not say who the client is.
        let error = intake(&["--listen", "10.0.0.1:8443", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .expect_err("no credentials")
            .to_string();
        assert!(error.contains("--listen"), "{error}");
    }

    #[test]
    fn invalid_flags_are_named() {
        for (flags, expected) in [
            (&["--tls-cert", "c.pem"][..], "--tls-key"),
            (&["--tls-key", "k.pem"], "--tls-cert"),
            (&["--tls-client-ca", "ca.pem"], "--tls-client-ca"),
            (&["--rate-limit-burst", "5"], "--rate-limit-burst"),
            (&["--request-body-timeout", "0s"], "--request-body-timeout"),
            (&["--request-header-timeout", "0s"], "--request-header-timeout"),
            (&["--intake-reload-interval", "0s"], "--intake-reload-interval"),
        ] {
            let error = intake(flags).expect_err("invalid").to_string();
            assert!(error.contains(expected), "{flags:?}: {error}");
        }
        for flags in [["--max-requests-in-flight", "0"], ["--max-notes-per-request", "0"]] {
            let mut argv = vec!["rebound-producer", "serve"];
            argv.extend_from_slice(&flags);
            let error = ProducerArgs::try_parse_from(argv)
                .expect_err("refused by clap")
                .to_string();
            assert!(error.contains(flags[0]), "{error}");
        }
    }
}
