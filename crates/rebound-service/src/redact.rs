//! Redaction of secrets before anything is shown: URLs that carry credentials or tokens (an HTTP
//! sink, a flags URL, an OTLP endpoint) and secret librdkafka properties.
//!
//! Operators paste log lines and error messages into tickets and chat, so a secret must never
//! reach them in the first place; redacting at the point of display is the only place it can be
//! done once for every log format.

pub use rebound_kafka::{REDACTED, is_secret_config_key, redact_config_value};

/// A URL fit for logs: user information (`user:password@`), the query and the fragment are
/// replaced by `***`, since that is where credentials and tokens travel; scheme, host, port and
/// path stay, so the log still says where a request went. Text that is not a URL is returned
/// with anything after a `?` or `#` redacted, which errs on the side of hiding.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("{REDACTED}@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let tail = match tail.find(['?', '#']) {
        Some(cut) => {
            let marker = &tail[cut..=cut];
            format!("{}{marker}{REDACTED}", &tail[..cut])
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{tail}"),
        None => format!("{host}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_query_and_fragment_are_hidden() {
        for (url, shown) in [
            (
                "https://alice:s3cret@sink.example:8443/v1/notes?token=t0k3n",
                "https://***@sink.example:8443/v1/notes?***",
            ),
            ("http://user@host/path", "http://***@host/path"),
            ("http://host:1/hook#frag", "http://host:1/hook#***"),
            ("http://host?key=abc", "http://host?***"),
            ("http://p%40ss:w@rd@host/x", "http://***@host/x"),
            ("http://127.0.0.1:8080/notes", "http://127.0.0.1:8080/notes"),
            ("not a url?secret=1", "not a url?***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn nothing_of_a_secret_survives() {
        let url = "https://bob:hunter2@hooks.example/services?api_key=xyz#tok";
        let shown = redact_url(url);
        for secret in ["bob", "hunter2", "xyz", "tok", "api_key"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
