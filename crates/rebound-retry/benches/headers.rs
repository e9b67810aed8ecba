//! Criterion micro-benchmarks of the retry header contract: `parse_retry_context` on a record
//! seen for the first time and on a tier record, and `failure_dispatch` for a first failure, a
//! second one (next tier) and a last one (dead letter, with the KIP-1191 headers). The consumer
//! runs the parse on every record and the dispatch on every failed one.
//!
//! Run with `cargo bench -p rebound-retry --bench headers`; docs/performance.md records results.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rebound_retry::{
    DueTiming, ErrorKind, Failure, RecordHeaders, RecordLocation, RetryContext, TierPolicy, failure_dispatch,
    parse_retry_context,
};

const GROUP: &str = "rebound-consumer";

fn policy() -> TierPolicy {
    TierPolicy::new(TierPolicy::default_tiers(), "dlq", "prod.").expect("default tiers are valid")
}

fn location(topic: &str, offset: i64) -> RecordLocation {
    RecordLocation {
        topic: topic.to_owned(),
        partition: 3,
        offset,
        timestamp_ms: Some(1_764_300_000_000),
    }
}

fn transient(at_ms: i64) -> Failure {
    Failure {
        kind: ErrorKind::Transient,
        message: "sqlite transaction failed: database is locked".to_owned(),
        failed_at_ms: at_ms,
    }
}

/// Headers of a record as the producer writes it: only a W3C trace context.
fn fresh_headers() -> RecordHeaders {
    let mut headers = RecordHeaders::new();
    headers.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    headers
}

/// The headers and parsed history of a record after `failures` transient failures.
fn after_failures(policy: &TierPolicy, failures: u32) -> (RecordHeaders, Option<RetryContext>) {
    let mut headers = fresh_headers();
    let mut previous = None;
    for attempt in 0..failures {
        let topic = previous
            .as_ref()
            .and_then(|context: &RetryContext| context.tier.clone())
            .unwrap_or_else(|| "prod.notes".to_owned());
        let dispatch = failure_dispatch(
            policy,
            &headers,
            previous.as_ref(),
            &location(&topic, 1000 + i64::from(attempt)),
            &transient(1_764_300_000_100 + i64::from(attempt) * 5000),
            GROUP,
            DueTiming::default(),
        );
        headers = dispatch.headers;
        previous = parse_retry_context(&headers).expect("written headers parse");
    }
    (headers, previous)
}

fn parse(criterion: &mut Criterion) {
    let policy = policy();
    let mut group = criterion.benchmark_group("parse_retry_context");
    let (tier_headers, _) = after_failures(&policy, 1);
    for (label, headers) in [("first_try", fresh_headers()), ("tier_record", tier_headers)] {
        group.bench_with_input(BenchmarkId::from_parameter(label), &headers, |bench, headers| {
            bench.iter(|| parse_retry_context(black_box(headers)).expect("parses"));
        });
    }
    group.finish();
}

fn dispatch(criterion: &mut Criterion) {
    let policy = policy();
    let mut group = criterion.benchmark_group("failure_dispatch");
    // After 0, 1 and 2 failures the next one goes to retry-5s, retry-1m and the DLQ.
    for (label, failures) in [("to_first_tier", 0), ("to_second_tier", 1), ("to_dlq", 2)] {
        let (headers, previous) = after_failures(&policy, failures);
        let location = location("prod.notes", 4242);
        let failure = transient(1_764_300_060_000);
        group.bench_function(BenchmarkId::from_parameter(label), |bench| {
            bench.iter(|| {
                failure_dispatch(
                    black_box(&policy),
                    black_box(&headers),
                    black_box(previous.as_ref()),
                    black_box(&location),
                    black_box(&failure),
                    GROUP,
                    DueTiming::default(),
                )
            });
        });
    }
    group.finish();
}

criterion_group!(benches, parse, dispatch);
criterion_main!(benches);
