//! Who may use the intake: bearer tokens from `--auth-tokens-file` (hot-reloaded) and client
//! certificates checked against `--tls-client-ca`.
//!
//! The tokens file holds one entry per line: `NAME:SHA256-HEX` (the file holds no token, only
//! its hash, so a leaked file grants nothing) or a bare token (named after its line). Blank lines
//! and lines starting with `#` are ignored. A presented token is hashed and compared with every
//! entry in constant time; logs and metrics name the entry, never the token.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

use crate::ProducerError;
use crate::watched_files::{FilesLook, WatchedFiles};

/// Bare tokens shorter than this are refused: they could be guessed.
const SHORTEST_BARE_TOKEN: usize = 16;

/// The SHA-256 of a token, as stored in `NAME:SHA256-HEX` entries.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(token_digest(token))
}

fn token_digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut bytes = [0_u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// One accepted token: its name and its hash.
struct TokenEntry {
    name: String,
    sha256: [u8; 32],
}

/// The tokens in force. Its `Debug` form lists the names only.
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_list()
            .entries(self.entries.iter().map(|entry| &entry.name))
            .finish()
    }
}

impl TokenSet {
    /// Parses a tokens file; an error names the line and what is wrong with it (never its
    /// content, which may be a token).
    pub fn parse(document: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(document).map_err(|_| "the file is not UTF-8".to_owned())?;
        let mut entries = Vec::new();
        let mut names = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = if let Some((name, hash)) = line.split_once(':') {
                let name = name.trim();
                let hash = hash.trim();
                if name.is_empty() {
                    return Err(format!("line {number}: the name before ':' is empty"));
                }
                let mut sha256 = [0_u8; 32];
                if hash.len() != 64 || hex::decode_to_slice(hash, &mut sha256).is_err() {
                    return Err(format!(
                        "line {number}: after the name {name:?} and ':' a SHA-256 hash in 64 hex digits is expected (a bare token cannot contain ':')"
                    ));
                }
                TokenEntry {
                    name: name.to_owned(),
                    sha256,
                }
            } else {
                if line.chars().any(char::is_whitespace) {
                    return Err(format!("line {number}: a bare token cannot contain spaces"));
                }
                if line.len() < SHORTEST_BARE_TOKEN {
                    return Err(format!(
                        "line {number}: a bare token must be at least {SHORTEST_BARE_TOKEN} characters"
                    ));
                }
                TokenEntry {
                    name: format!("line-{number}"),
                    sha256: token_digest(line),
                }
            };
            if !names.insert(entry.name.clone()) {
                return Err(format!("line {number}: the name {:?} is used twice", entry.name));
            }
            entries.push(entry);
        }
        Ok(Self { entries })
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the entry `presented` matches. Every entry is compared, in constant time,
    /// so the answer's timing says nothing about which entry (or how much of one) matched.
    pub fn name_of(&self, presented: &str) -> Option<&str> {
        let digest = token_digest(presented);
        let mut matched = None;
        for entry in &self.entries {
            if bool::from(entry.sha256.ct_eq(&digest)) {
                matched = Some(entry.name.as_str());
            }
        }
        matched
    }
}

/// Loads the tokens file (refusing to start on an unreadable or invalid one) and keeps it
/// current: every `poll`, a changed file replaces the tokens in force; a file that turns
/// unreadable or invalid keeps the last good tokens and is reported.
pub(crate) async fn watch_tokens(
    path: PathBuf,
    poll: Duration,
) -> Result<watch::Receiver<Arc<TokenSet>>, ProducerError> {
    let shown = path.display().to_string();
    let mut files = WatchedFiles::new(vec![path]);
    let initial = match files.look().await {
        FilesLook::Changed(mut contents) => TokenSet::parse(&contents.remove(0)),
        FilesLook::Unreadable { error, .. } => Err(error.to_string()),
        FilesLook::Unchanged => Err("not read".to_owned()),
    }
    .map_err(|reason| ProducerError::LoadIntakeFile {
        what: "--auth-tokens-file",
        path: shown.clone(),
        reason,
    })?;
    tracing::info!(path = %shown, names = ?initial, "bearer tokens loaded");
    let (sender, receiver) = watch::channel(Arc::new(initial));
    files.keep_watching(poll, sender, move |look, sender| match look {
        FilesLook::Changed(mut contents) => match TokenSet::parse(&contents.remove(0)) {
            Ok(tokens) => {
                tracing::info!(path = %shown, names = ?tokens, "bearer tokens reloaded");
                sender.send_replace(Arc::new(tokens));
            }
            Err(reason) => rebound_service::events::producer_intake_reload_failed("auth_tokens", &shown, &reason),
        },
        FilesLook::Unreadable { error, .. } => {
            rebound_service::events::producer_intake_reload_failed("auth_tokens", &shown, &error.to_string());
        }
        FilesLook::Unchanged => {}
    });
    Ok(receiver)
}

/// What the listener knows of a connection, attached to each of its requests.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The name of the client certificate verified against `--tls-client-ca`, if one was
    /// presented.
    pub client_certificate: Option<String>,
}

/// Who made a request, as logs, metrics and the rate limit know it: never a credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    /// A bearer token, by its entry's name.
    Token(String),
    /// A client certificate, by its fingerprint.
    Certificate(String),
    /// No credentials are configured (loopback or `--insecure-listen`): the peer's address.
    Address(std::net::IpAddr),
}

impl fmt::Display for Client {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(name) => write!(formatter, "token:{name}"),
            Self::Certificate(fingerprint) => write!(formatter, "{fingerprint}"),
            Self::Address(address) => write!(formatter, "address:{address}"),
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No token and no client certificate.
    Missing,
    /// A token that matches no entry (or a malformed `Authorization` header).
    InvalidToken,
}

/// The intake's credentials check.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    /// The tokens in force, if `--auth-tokens-file` is given.
    pub tokens: Option<watch::Receiver<Arc<TokenSet>>>,
    /// Whether a verified client certificate authenticates (`--tls-client-ca`).
    pub client_certificates: bool,
}

impl Authenticator {
    /// Whether any credential is required at all.
    pub(crate) fn enabled(&self) -> bool {
        self.tokens.is_some() || self.client_certificates
    }

    /// Who the request comes from, or why it is refused. A verified client certificate is
    /// enough; otherwise a bearer token is needed.
    pub(crate) fn authenticate(&self, headers: &HeaderMap, connection: &ConnectionInfo) -> Result<Client, AuthFailure> {
        if !self.enabled() {
            return Ok(Client::Address(connection.peer.ip()));
        }
        if self.client_certificates
            && let Some(name) = &connection.client_certificate
        {
            return Ok(Client::Certificate(name.clone()));
        }
        let Some(tokens) = &self.tokens else {
            return Err(AuthFailure::Missing);
        };
        let Some(authorization) = headers.get(header::AUTHORIZATION) else {
            return Err(AuthFailure::Missing);
        };
        let presented = authorization
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(AuthFailure::InvalidToken)?;
        let tokens = Arc::clone(&tokens.borrow());
        tokens
            .name_of(presented)
            .map(|name| Client::Token(name.to_owned()))
            .ok_or(AuthFailure::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_and_bare_entries_match_their_tokens_only() {
        let hashed = token_sha256_hex("mobile-app-token-0001");
        let document = format!("# the mobile app\nmobile:{hashed}\n\nsecond-bare-token-xyz\n");
        let tokens = TokenSet::parse(document.as_bytes()).expect("valid");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.name_of("mobile-app-token-0001"), Some("mobile"));
        assert_eq!(tokens.name_of("second-bare-token-xyz"), Some("line-4"));
        assert_eq!(tokens.name_of("mobile-app-token-0002"), None);
        assert_eq!(tokens.name_of(&hashed), None, "the hash itself is no token");
        assert!(!format!("{tokens:?}").contains(&hashed), "Debug shows names only");
    }

    #[test]
    fn invalid_lines_are_named_without_their_content() {
        for (document, expected) in [
            ("ci:abc\n", "line 1: after the name"),
            ("ok-token-is-long-enough\n:00\n", "line 2: the name"),
            ("short\n", "at least 16"),
            ("two words in a token\n", "spaces"),
        ] {
            let reason = TokenSet::parse(document.as_bytes()).expect_err("invalid");
            assert!(reason.contains(expected), "{document:?}: {reason}");
        }
        let hash = token_sha256_hex("x");
        let reason = TokenSet::parse(format!("a:{hash}\na:{hash}\n").as_bytes()).expect_err("twice");
        assert!(reason.contains("used twice"), "{reason}");
        let reason = TokenSet::parse(b"secret-token-on-a-bad-line:zz\n").expect_err("invalid");
        assert!(!reason.contains("zz"), "{reason}");
    }

    #[test]
    fn an_authorization_header_needs_the_bearer_scheme_and_a_known_token() {
        let (_sender, receiver) =
            watch::channel(Arc::new(TokenSet::parse(b"a-long-enough-bare-token\n").expect("valid")));
        let authenticator = Authenticator {
            tokens: Some(receiver),
            client_certificates: true,
        };
        let connection = ConnectionInfo {
            peer: "127.0.0.1:9".parse().expect("address"),
            client_certificate: None,
        };
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
            authenticator.authenticate(&headers, &connection)
        };
        assert_eq!(
            with("Bearer a-long-enough-bare-token"),
            Ok(Client::Token("line-1".to_owned()))
        );
        assert_eq!(
            with("bearer a-long-enough-bare-token"),
            Ok(Client::Token("line-1".to_owned()))
        );
        assert_eq!(with("Basic a-long-enough-bare-token"), Err(AuthFailure::InvalidToken));
        assert_eq!(with("Bearer wrong"), Err(AuthFailure::InvalidToken));
        assert_eq!(
            authenticator.authenticate(&HeaderMap::new(), &connection),
            Err(AuthFailure::Missing)
        );
        let certified = ConnectionInfo {
            client_certificate: Some("client-cert:00ff".to_owned()),
            ..connection
        };
        assert_eq!(
            authenticator.authenticate(&HeaderMap::new(), &certified),
            Ok(Client::Certificate("client-cert:00ff".to_owned()))
        );
    }
}
