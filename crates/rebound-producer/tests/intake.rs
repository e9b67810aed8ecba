//! The producer's HTTP intake: bad input gets the documented status and a message naming the
//! problem, a rejected request changes nothing, and the outbox accepts while Kafka is away.

mod common;

use common::{ProducerProcess, note_json};
use serde_json::json;

/// Nothing listens here: Kafka is "down" for the whole test.
const NO_BROKER: &str = "127.0.0.1:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_change_nothing() {
    let outbox = tempfile::tempdir().expect("tempdir");
    let producer = ProducerProcess::serve(NO_BROKER, outbox.path(), None, &["--max-body-bytes", "4096"]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/notes", producer.base_url);

    let syntax = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"note_id\": ")
        .send()
        .await
        .expect("answered");
    assert_eq!(syntax.status().as_u16(), 400);
    let body: serde_json::Value = syntax.json().await.expect("json");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("not valid JSON"),
        "{body}"
    );

    let mut wrong_type = note_json("n", 1);
    wrong_type["version"] = json!("two");
    let (status, body) = producer.post_notes(&wrong_type).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("\"version\""),
        "{body}"
    );

    let mut empty_id = note_json("", 1);
    empty_id["note_id"] = json!("");
    let (status, body) = producer.post_notes(&empty_id).await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap_or_default().contains("note_id"), "{body}");

    let mut bad_item = note_json("x", 1);
    bad_item["tags"] = json!("not-a-list");
    let (status, body) = producer
        .post_notes(&json!([note_json("a", 1), bad_item, note_json("b", 1)]))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["problems"][0]["index"], 1, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was accepted"),
        "{body}"
    );

    let huge = note_json(&"x".repeat(100), 1);
    let too_large = json!(vec![huge; 100]);
    let (status, body) = producer.post_notes(&too_large).await;
    assert_eq!(status, 413);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("4096 bytes"),
        "{body}"
    );

    let outbox_state = producer.get_json("/v1/outbox").await;
    assert_eq!(
        outbox_state["pending"], 0,
        "no rejected request left anything behind: {outbox_state}"
    );

    // And a good request is accepted although Kafka is unreachable.
    let (status, body) = producer
        .post_notes(&json!([note_json("a", 1), note_json("a", 2)]))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["count"], 2);
    assert_eq!(body["accepted"][1]["version"], 2);
    assert_eq!(producer.get_json("/v1/outbox").await["pending"], 2);
    producer.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_answers_503_with_retry_after_and_accepts_nothing() {
    let outbox = tempfile::tempdir().expect("tempdir");
    let producer = ProducerProcess::serve(NO_BROKER, outbox.path(), None, &["--outbox-max-bytes", "150"]).await;
    let (status, _) = producer.post_notes(&note_json("first", 1)).await;
    assert_eq!(status, 202);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/notes", producer.base_url))
        .json(&json!([
            note_json("second", 1),
            note_json("third", 1),
            note_json("fourth", 1)
        ]))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 503);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!(retry_after >= 1);
    assert_eq!(producer.get_json("/v1/outbox").await["pending"], 1);
    producer.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_too_large_for_kafka_is_refused_with_413_naming_the_limit_and_nothing_is_accepted() {
    let outbox = tempfile::tempdir().expect("tempdir");
    // The body limit (1 MiB by default) lets the note through; the record limit must not.
    let producer = ProducerProcess::serve(NO_BROKER, outbox.path(), None, &["-X", "message.max.bytes=20000"]).await;
    let mut oversized = note_json("big", 1);
    oversized["body"] = json!("x".repeat(30_000));
    let (status, body) = producer.post_notes(&json!([note_json("small", 1), oversized])).await;
    assert_eq!(status, 413, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("message.max.bytes"), "{body}");
    assert!(message.contains("20000"), "names the limit: {body}");
    assert!(message.contains("nothing was accepted"), "{body}");
    assert_eq!(body["problems"][0]["index"], 1, "{body}");
    assert_eq!(
        producer.get_json("/v1/outbox").await["pending"],
        0,
        "the small note of the refused request was not accepted either"
    );

    // A note just under the limit is still accepted.
    let mut fits = note_json("fits", 1);
    fits["body"] = json!("x".repeat(15_000));
    let (status, body) = producer.post_notes(&fits).await;
    assert_eq!(status, 202, "{body}");
    producer.terminate().await;
}
