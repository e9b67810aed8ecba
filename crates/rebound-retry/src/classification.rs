//! Classification of processing failures, and the error text that travels with a record.

use std::fmt;
use std::str::FromStr;

use crate::RetryError;

/// Longest error message carried in `retry.error.message`, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Why a record could not be processed, which decides where it goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// May succeed later (timeouts, 5xx, a locked database): goes to the next retry tier.
    Transient,
    /// Will fail again however often it is tried (a 4xx, a rejected note): goes to the DLQ at once.
    Permanent,
    /// Cannot even be read (undecodable bytes, garbled retry headers): goes to the DLQ at once,
    /// with its bytes untouched.
    Poison,
    /// Never tried: parked behind an earlier record of its key that was dead-lettered, it
    /// followed that record to the DLQ (`--on-dead-key dlq`) to keep the key's order.
    BlockedByKey,
}

impl ErrorKind {
    /// The kind's name as written in `retry.error.kind` and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Poison => "poison",
            ErrorKind::BlockedByKey => "blocked-by-key",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for ErrorKind {
    type Err = RetryError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input {
            "transient" => Ok(ErrorKind::Transient),
            "permanent" => Ok(ErrorKind::Permanent),
            "poison" => Ok(ErrorKind::Poison),
            "blocked-by-key" => Ok(ErrorKind::BlockedByKey),
            _ => Err(RetryError::ParseErrorKind {
                input: input.to_owned(),
            }),
        }
    }
}

/// One failed processing attempt of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How the failure is classified.
    pub kind: ErrorKind,
    /// Human-readable cause; truncated when written to headers.
    pub message: String,
    /// When the attempt failed, in milliseconds since the Unix epoch.
    pub failed_at_ms: i64,
}

/// Cuts a message to at most [`MAX_ERROR_MESSAGE_BYTES`] bytes without splitting a character.
pub fn truncate_error_message(message: &str) -> &str {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kind_names_round_trip() {
        for kind in [
            ErrorKind::Transient,
            ErrorKind::Permanent,
            ErrorKind::Poison,
            ErrorKind::BlockedByKey,
        ] {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
        }
        assert!("Transient".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn truncation_respects_the_byte_limit_and_character_boundaries() {
        assert_eq!(truncate_error_message("short"), "short");
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let cut = truncate_error_message(&long);
        assert!(cut.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert_eq!(cut.len(), MAX_ERROR_MESSAGE_BYTES, "é is two bytes, 1024 is even");
        let odd = format!("a{long}");
        assert_eq!(truncate_error_message(&odd).len(), MAX_ERROR_MESSAGE_BYTES - 1);
    }
}
