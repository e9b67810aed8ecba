//! Signing webhook requests, so a receiver can tell rebound from anyone else who can reach it:
//! `X-Rebound-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the scheme of
//! Stripe's and GitHub's webhooks. The timestamp is inside the signed text, so a receiver that
//! refuses old timestamps (`docs/sinks.md`: a replay window of 5 minutes) also refuses a captured
//! request played again later. Pure: the caller passes the time in.

use hmac::Mac as _;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Rebound-Signature";

/// The shortest secret accepted: 16 bytes, so a secret cannot be guessed by trying.
pub const MIN_SECRET_BYTES: usize = 16;

/// HMAC-SHA256 keyed by the shared secret.
type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The secret shared with the receiver. Its `Debug` form never shows it.
#[derive(Clone)]
pub struct WebhookSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WebhookSigner(***)")
    }
}

/// Why a secret cannot sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakSecret {
    /// How long the secret was, in bytes.
    pub length: usize,
}

impl std::fmt::Display for WeakSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "the signing secret has {} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -hex 32`)",
            self.length
        )
    }
}

impl WebhookSigner {
    /// A signer with this secret, which must have at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(secret: Vec<u8>) -> Result<Self, WeakSecret> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret { length: secret.len() });
        }
        Ok(Self { secret })
    }

    /// The value of [`SIGNATURE_HEADER`] for `body` sent at `unix_seconds`.
    pub fn signature(&self, unix_seconds: u64, body: &[u8]) -> String {
        let timestamp = unix_seconds.to_string();
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex() {
        let signer = WebhookSigner::new(b"whsec-0123456789abcdef".to_vec()).expect("long enough");
        // Computed independently: python3 -c 'import hmac,hashlib; print(hmac.new(
        //   b"whsec-0123456789abcdef", b"1700000000.{\"id\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signer.signature(1_700_000_000, br#"{"id":1}"#),
            "t=1700000000,v1=139d89016db745c75bf654476b1450b5650c0885f51ba9dae48257ca45752295"
        );
    }

    #[test]
    fn a_short_secret_is_refused_and_no_secret_is_shown() {
        let error = WebhookSigner::new(b"short".to_vec()).expect_err("too short");
        assert_eq!(error, WeakSecret { length: 5 });
        assert!(error.to_string().contains("at least 16"), "{error}");
        let signer = WebhookSigner::new(b"a-secret-of-enough-length".to_vec()).expect("long enough");
        assert_eq!(format!("{signer:?}"), "WebhookSigner(***)");
    }

    #[test]
    fn the_timestamp_and_the_body_both_change_the_signature() {
        let signer = WebhookSigner::new(vec![7; 32]).expect("long enough");
        let base = signer.signature(10, b"body");
        assert_ne!(base, signer.signature(11, b"body"));
        assert_ne!(base, signer.signature(10, b"bodY"));
        // "1.0body" and "10.body" must not collide: the dot separates the parts.
        assert_ne!(signer.signature(1, b"0.body"), base);
    }
}
