//! The sink plug-in point: the [`Sink`] trait every sink implements, built-in or a user's own,
//! and the values that cross it ([`ApplyItem`] in, one [`ApplyOutcome`] per item out).
//!
//! A sink answers per note, never per batch, so one bad note never fails the notes beside it:
//! the consumer routes each failed note by its kind (transient: the next retry tier; permanent:
//! the DLQ) and stores offsets only for notes that were applied or whose copy was acknowledged.
//! See `docs/sinks.md` for how to write one and run the consumer with it.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rebound_retry::ErrorKind;
use rebound_schema::Note;

/// One note to apply, with where it stands in its retry history.
#[derive(Debug, Clone)]
pub struct ApplyItem {
    /// The decoded note.
    pub note: Note,
    /// Failed attempts before this one (0 on the first try).
    pub previous_attempts: u32,
    /// The tier the record last went through, if it was retried.
    pub last_tier: Option<String>,
}

/// Why a sink could not apply one note. Made only through [`SinkFailure::transient`] and
/// [`SinkFailure::permanent`], so a sink can report no other kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkFailure {
    /// Transient (retry later) or permanent (dead-letter now).
    pub kind: ErrorKind,
    /// What went wrong, for the `retry.error.message` header. Never put a secret in it: it is
    /// logged and travels with the record's copy.
    pub message: String,
    /// For a transient failure, how long the sink asked to be left alone (an HTTP
    /// `Retry-After`), if it said; always `None` for a permanent one.
    pub retry_after: Option<Duration>,
}

impl SinkFailure {
    /// A failure that may succeed when tried again later.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A transient failure whose sink asked not to be tried again for `retry_after`.
    pub fn transient_retry_after(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::transient(message)
        }
    }

    /// A failure that will not succeed however often it is tried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// What became of one note: `Ok(())` when applied (or found already applied: the version rule
/// makes a repeated delivery a success), else the failure.
pub type ApplyOutcome = Result<(), SinkFailure>;

/// The future a sink's [`Sink::apply_batch`] returns: boxed, so sinks can be chosen at run time
/// (`Box<dyn Sink>`), and `Send`, since the consumer runs on a multi-threaded runtime.
pub type ApplyBatchFuture<'sink> = Pin<Box<dyn Future<Output = Vec<ApplyOutcome>> + Send + 'sink>>;

/// A sink: where the consumer applies decoded notes.
///
/// The contract, which the consumer's guarantees rest on:
/// - the result has exactly one outcome per item, in the items' order (a missing outcome counts
///   as a transient failure, a surplus one is ignored);
/// - `Ok(())` means the note's effect is durable: after a crash it is still there;
/// - applying a version that is already applied, or older than the stored one, succeeds and
///   changes nothing (delivery is at least once: the same note comes again after a crash);
/// - a call is bounded in time well below the consumer group's `max.poll.interval.ms`: a note
///   without an answer by then should be a transient failure;
/// - input from the network never panics the sink; a note it cannot store is a permanent
///   failure of that note alone.
pub trait Sink: Debug + Send + Sync {
    /// Applies a batch; the result has one outcome per item, in order.
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_>;
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_> {
        (**self).apply_batch(items)
    }
}

impl<S: Sink + ?Sized> Sink for std::sync::Arc<S> {
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_> {
        (**self).apply_batch(items)
    }
}

/// The null sink: accepts every note and keeps nothing (benchmarks, `null://`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_> {
        let outcomes = vec![Ok(()); items.len()];
        Box::pin(std::future::ready(outcomes))
    }
}
