//! Reading what tests find in topics and on `/metrics`: headers that must be there, records by
//! key, the headers a hop must carry over unchanged, and one sample of a scrape.

use rebound_kafka::ConsumedRecord;
use rebound_retry::{RecordHeaders, contract};

/// The value of header `key` on `record` as text; panics naming the key and the headers the
/// record does carry, so a failed contract assertion says what was there instead.
pub fn required_header<'record>(record: &'record ConsumedRecord, key: &str) -> &'record str {
    record.headers.get_str(key).unwrap_or_else(|| {
        let present: Vec<&str> = record.headers.iter().map(|header| header.key.as_str()).collect();
        panic!("header {key} missing; the record carries {present:?}")
    })
}

/// The first record keyed `key`; panics when there is none.
pub fn record_keyed<'records>(records: &'records [ConsumedRecord], key: &str) -> &'records ConsumedRecord {
    records
        .iter()
        .find(|record| record.key.as_deref() == Some(key.as_bytes()))
        .unwrap_or_else(|| panic!("no record keyed {key}"))
}

/// The headers a copy must carry over unchanged: all but the contract's and `traceparent`, which
/// every hop replaces.
pub fn foreign_headers(headers: &RecordHeaders) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .filter(|header| {
            !contract::FAILURE_HISTORY_KEYS.contains(&header.key.as_str())
                && !contract::DLQ_KEYS.contains(&header.key.as_str())
                && header.key != "traceparent"
        })
        .map(|header| (header.key.clone(), header.value.clone()))
        .collect()
}

/// Asserts that a copy carries each header of the contract's history at most once: a hop
/// replaces the history, it never appends a second one.
pub fn assert_history_headers_at_most_once(copy: &ConsumedRecord, context: &str) {
    for key in contract::FAILURE_HISTORY_KEYS.iter().chain(contract::DLQ_KEYS.iter()) {
        assert!(copy.headers.count(key) <= 1, "{context}: {key} appears more than once");
    }
}

/// The value of the first sample of a Prometheus scrape whose line starts with `series` (the
/// name plus labels), if any.
pub fn metric_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The text of a `/metrics` scrape of `url`; panics when the endpoint does not answer.
pub async fn scrape_metrics(url: &str) -> String {
    reqwest::get(url).await.expect("scraped").text().await.expect("text")
}
