//! The HTTP sink's settings beyond its URL: timeouts, how many requests run at once, a secret
//! header for authentication (from a file or the environment), CA certificates trusted on top of
//! the bundled and the system trust stores, and the secret that signs every request. Files are
//! read, and everything checked, while the configuration is built, before any work starts; no
//! secret value ever reaches a `Debug` form, a log line or an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

use super::signature::{SIGNATURE_HEADER, WebhookSigner};

/// Headers the sink sets itself, which a configured header may not replace.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "host",
    "idempotency-key",
    SIGNATURE_HEADER,
];

/// How the HTTP sink sends.
#[derive(Debug, Clone)]
pub struct HttpSinkSettings {
    /// Bound on one request (and its connection).
    pub timeout: Duration,
    /// Bound on one batch; what has no answer by then is a transient failure.
    pub batch_deadline: Duration,
    /// Most requests of a batch in flight at once (at least 1).
    pub concurrency: usize,
    /// A header sent with every request, typically `Authorization`.
    pub header: Option<SecretHeader>,
    /// CA certificates trusted in addition to the bundled and the system roots.
    pub trusted_ca: Option<TrustedCa>,
    /// Signs every request with `X-Rebound-Signature`.
    pub signer: Option<WebhookSigner>,
}

impl HttpSinkSettings {
    /// Settings with the given timeouts and the defaults for the rest: 16 requests at once, no
    /// extra header, no extra CA, unsigned.
    pub fn new(timeout: Duration, batch_deadline: Duration) -> Self {
        Self {
            timeout,
            batch_deadline,
            concurrency: DEFAULT_CONCURRENCY,
            header: None,
            trusted_ca: None,
            signer: None,
        }
    }
}

/// Requests of one batch in flight at once unless `--http-concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// A header whose value is a secret: its `Debug` form shows the name only, and reqwest marks the
/// value sensitive so that its own debug output hides it too.
#[derive(Clone)]
pub struct SecretHeader {
    name: HeaderName,
    value: HeaderValue,
}

impl std::fmt::Debug for SecretHeader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: ***", self.name)
    }
}

impl SecretHeader {
    /// Parses `Name: value`. Errors name the problem, never the value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| "expected `Name: value` (no `:` found)".to_owned())?;
        let name = name.trim();
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a valid header name"))?;
        if RESERVED_HEADERS
            .iter()
            .any(|reserved| name.as_str().eq_ignore_ascii_case(reserved))
        {
            return Err(format!("the sink sets {name} itself"));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("the value of {name} is empty"));
        }
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of {name} has characters a header cannot carry"))?;
        value.set_sensitive(true);
        Ok(Self { name, value })
    }

    /// Reads the header from a file: one `Name: value` line; blank lines and lines starting with
    /// `#` are ignored.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'));
        let line = lines
            .next()
            .ok_or_else(|| format!("{} holds no `Name: value` line", path.display()))?;
        if lines.next().is_some() {
            return Err(format!("{} holds more than one header line", path.display()));
        }
        Self::parse(line).map_err(|reason| format!("{}: {reason}", path.display()))
    }

    /// The header's name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The header's value (marked sensitive).
    pub fn value(&self) -> &HeaderValue {
        &self.value
    }
}

/// `Name: value` from the command line or the environment, shown as `***` in `Debug`.
#[derive(Clone)]
pub struct HeaderText(String);

impl std::fmt::Debug for HeaderText {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("***")
    }
}

impl std::str::FromStr for HeaderText {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl HeaderText {
    /// The text as given.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// CA certificates from a PEM file, trusted for the sink's TLS connections.
#[derive(Clone)]
pub struct TrustedCa {
    path: PathBuf,
    certificates: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for TrustedCa {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TrustedCa")
            .field("path", &self.path)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl TrustedCa {
    /// Reads every certificate of a PEM bundle; a file without one is an error.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| format!("{} is not a PEM certificate bundle: {error}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            certificates,
        })
    }

    /// The certificates.
    pub fn certificates(&self) -> &[reqwest::Certificate] {
        &self.certificates
    }
}

/// Reads the signing secret from a file; surrounding whitespace (a trailing newline) is not
/// part of it.
pub fn signer_from_file(path: &Path) -> Result<WebhookSigner, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    WebhookSigner::new(bytes.trim_ascii().to_vec()).map_err(|error| format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_parses_and_never_shows_its_value() {
        let header = SecretHeader::parse("Authorization: Bearer s3cr3t-token").expect("valid");
        assert_eq!(header.name().as_str(), "authorization");
        assert_eq!(header.value().to_str().expect("text"), "Bearer s3cr3t-token");
        assert!(header.value().is_sensitive());
        assert_eq!(format!("{header:?}"), "authorization: ***");
        assert_eq!(format!("{:?}", HeaderText("X-Api-Key: k3y".to_owned())), "***");
    }

    #[test]
    fn bad_headers_are_refused_without_showing_the_value() {
        for (text, expected) in [
            ("no colon here", "no `:`"),
            ("Bad Name: s3cr3t", "not a valid header name"),
            ("X-Key:   ", "empty"),
            ("Idempotency-Key: s3cr3t", "sets idempotency-key itself"),
            ("x-rebound-signature: s3cr3t", "itself"),
            ("X-Key: s3cr3t\u{7f}", "characters"),
        ] {
            let error = SecretHeader::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("s3cr3t"), "{error}");
        }
    }

    #[test]
    fn a_header_file_holds_exactly_one_header_line() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("header");
        std::fs::write(&path, "# the sink's token\n\nAuthorization: Bearer s3cr3t\n").expect("write");
        let header = SecretHeader::from_file(&path).expect("valid");
        assert_eq!(header.value().to_str().expect("text"), "Bearer s3cr3t");
        std::fs::write(&path, "A: s3cr3t\nB: s3cr3t\n").expect("write");
        let error = SecretHeader::from_file(&path).expect_err("two lines");
        assert!(error.contains("more than one"), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(
            SecretHeader::from_file(&path)
                .expect_err("empty")
                .contains("no `Name: value`")
        );
        let missing = directory.path().join("missing");
        assert!(
            SecretHeader::from_file(&missing)
                .expect_err("missing")
                .contains("cannot read")
        );
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate_and_a_secret_file_enough_bytes() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("file");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let error = TrustedCa::from_file(&path).expect_err("no certificate");
        assert!(error.contains("no PEM certificate"), "{error}");
        std::fs::write(&path, "short\n").expect("write");
        let error = signer_from_file(&path).expect_err("short");
        assert!(error.contains("at least 16"), "{error}");
        std::fs::write(&path, "  0123456789abcdef0123456789abcdef\n").expect("write");
        let signer = signer_from_file(&path).expect("long enough");
        let expected = WebhookSigner::new(b"0123456789abcdef0123456789abcdef".to_vec()).expect("long enough");
        assert_eq!(signer.signature(1, b"x"), expected.signature(1, b"x"));
    }
}
