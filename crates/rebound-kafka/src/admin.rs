//! Topic administration: idempotent creation of the pipeline's topics, listing and deletion of
//! topics, and partition lookups.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::auth::AuthWatch;
use crate::{KafkaArgs, KafkaError};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic-level configuration such as `retention.ms`.
    pub config: BTreeMap<String, String>,
}

/// What happened to one topic of a create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicCreation {
    /// The topic did not exist and was created.
    Created(String),
    /// The topic existed already and was left as it is.
    AlreadyExisted(String),
}

/// The consumer's per-key order state topic: compacted (each entry's key names a blocked key
/// or a parked record, and only its latest value counts), one partition (every member reads
/// it whole on assignment), and `max.message.bytes` of 8 MiB so a parked copy of any source
/// record fits (an entry adds a few headers to the record).
pub fn key_order_state_topic_spec(name: &str, replication_factor: i32, min_insync_replicas: Option<i32>) -> TopicSpec {
    let mut config = BTreeMap::from([
        ("cleanup.policy".to_owned(), "compact".to_owned()),
        ("max.message.bytes".to_owned(), (8 * 1024 * 1024).to_string()),
    ]);
    if let Some(min_isr) = min_insync_replicas {
        config.insert("min.insync.replicas".to_owned(), min_isr.to_string());
    }
    TopicSpec {
        name: name.to_owned(),
        partitions: 1,
        replication_factor,
        config,
    }
}

/// Creates the topics that do not exist yet; existing ones are left untouched, so running it
/// twice is safe. Fails on the first topic the broker refuses for another reason.
pub async fn create_topics(
    args: &KafkaArgs,
    specs: &[TopicSpec],
    timeout: Duration,
) -> Result<Vec<TopicCreation>, KafkaError> {
    let resolved = args.resolve()?;
    // The admin client reports refused credentials only as a timeout at the end; a metadata
    // request first turns them into a clear error within a second or so.
    let probe_config = resolved.client_config(&[]);
    let topic_names = || {
        specs
            .iter()
            .map(|spec| spec.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    tokio::task::spawn_blocking(move || {
        let (consumer, auth) = watched_metadata_client(&probe_config)?;
        fetch_metadata_watching_auth(&consumer, &auth, None, timeout).map(|_| ())
    })
    .await
    .map_err(|_| KafkaError::Timeout {
        operation: "metadata fetch",
        timeout_ms: timeout.as_millis(),
    })?
    .map_err(|error| match error {
        // Unreachable brokers: the same error the admin call would have given, naming the topics.
        KafkaError::FetchMetadata { reason, .. } => KafkaError::CreateTopic {
            topic: topic_names(),
            reason,
        },
        other => other,
    })?;
    let admin: AdminClient<DefaultClientContext> =
        resolved
            .client_config(&[])
            .create()
            .map_err(|source| KafkaError::CreateClient {
                client: "admin",
                source,
            })?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            spec.config.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication_factor),
                ),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|source| KafkaError::CreateTopic {
            topic: topic_names(),
            reason: source.to_string(),
        })?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(name) => Ok(TopicCreation::Created(name)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(TopicCreation::AlreadyExisted(name)),
            Err((name, code)) => Err(KafkaError::CreateTopic {
                topic: name,
                reason: code.to_string(),
            }),
        })
        .collect()
}

/// Names of the cluster's topics, sorted; internal topics (`__consumer_offsets`, ...) included.
pub async fn list_topics(args: &KafkaArgs, timeout: Duration) -> Result<Vec<String>, KafkaError> {
    let config = args.resolve()?.client_config(&[]);
    detached_thread(move || {
        let (consumer, auth) = watched_metadata_client(&config)?;
        let metadata = fetch_metadata_watching_auth(&consumer, &auth, None, timeout)?;
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .filter(|topic| topic.error().is_none())
            .map(|topic| topic.name().to_owned())
            .collect();
        names.sort();
        Ok(names)
    })
    .await
    .map_err(|_| KafkaError::Timeout {
        operation: "metadata fetch",
        timeout_ms: timeout.as_millis(),
    })?
}

/// Deletes the named topics. A topic that no longer exists counts as deleted, so running it
/// twice is safe. Every topic the broker refuses is named in the error, with the first reason.
pub async fn delete_topics(args: &KafkaArgs, topics: &[String], timeout: Duration) -> Result<(), KafkaError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        args.resolve()?
            .client_config(&[])
            .create()
            .map_err(|source| KafkaError::CreateClient {
                client: "admin",
                source,
            })?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .delete_topics(&names, &options)
        .await
        .map_err(|source| KafkaError::DeleteTopic {
            topic: names.join(","),
            reason: source.to_string(),
        })?;
    let refused: Vec<(String, RDKafkaErrorCode)> = results
        .into_iter()
        .filter_map(|result| match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => None,
            Err((name, code)) => Some((name, code)),
        })
        .collect();
    match refused.first() {
        None => Ok(()),
        Some((_, code)) => Err(KafkaError::DeleteTopic {
            topic: refused
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            reason: code.to_string(),
        }),
    }
}

/// How long one metadata request may take before the authentication watch is looked at again.
const METADATA_SLICE: Duration = Duration::from_secs(1);

/// A client for metadata requests whose librdkafka log lines and errors go to an [`AuthWatch`].
fn watched_metadata_client(config: &ClientConfig) -> Result<(BaseConsumer<AuthWatch>, AuthWatch), KafkaError> {
    let auth = AuthWatch::default();
    let consumer = config
        .create_with_context(auth.clone())
        .map_err(|source| KafkaError::CreateClient {
            client: "metadata",
            source,
        })?;
    Ok((consumer, auth))
}

/// Fetches the metadata of `topic` (or of the cluster) within `timeout`, in short requests, so
/// that refused credentials are reported as such within a second or so instead of as a
/// transport failure at the timeout.
fn fetch_metadata_watching_auth(
    consumer: &BaseConsumer<AuthWatch>,
    auth: &AuthWatch,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<rdkafka::metadata::Metadata, KafkaError> {
    let give_up = std::time::Instant::now() + timeout;
    loop {
        let left = give_up.saturating_duration_since(std::time::Instant::now());
        match consumer.fetch_metadata(topic, left.min(METADATA_SLICE)) {
            Ok(metadata) => return Ok(metadata),
            Err(source) => {
                // librdkafka hands its log lines and error events to the client's queue, which
                // only a poll serves; nothing is assigned, so no record can come back.
                for _ in 0..MAX_EVENTS_PER_POLL {
                    match consumer.poll(Duration::ZERO) {
                        None => break,
                        Some(Err(error)) => auth.record_error(&error),
                        Some(Ok(_)) => {}
                    }
                }
                if let Some(error) = auth.error() {
                    return Err(error);
                }
                if left <= METADATA_SLICE {
                    return Err(KafkaError::FetchMetadata {
                        what: topic.unwrap_or("the cluster").to_owned(),
                        reason: source.to_string(),
                    });
                }
            }
        }
    }
}

/// Most queued events served between two metadata requests.
const MAX_EVENTS_PER_POLL: usize = 100;

/// How long a topic may be absent from metadata before it counts as missing.
const MISSING_TOPIC_GRACE: Duration = Duration::from_secs(5);

/// Partition counts of the named topics; a topic that does not exist is an error naming it.
pub async fn fetch_partition_counts(
    args: &KafkaArgs,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, i32>, KafkaError> {
    let config = args.resolve()?.client_config(&[]);
    let topics = topics.to_vec();
    // On a thread of its own rather than the runtime's blocking pool: a service stopped during
    // this check (SIGTERM at start-up) drops the future and exits at once, while the runtime
    // would wait for a pooled thread to finish its fetch, up to `timeout` per topic.
    detached_thread(move || {
        let (consumer, auth) = watched_metadata_client(&config)?;
        let mut counts = BTreeMap::new();
        for topic in &topics {
            // A topic created a moment ago may not be in the broker's metadata yet (a service
            // started right after `rebound topics create`); ask again for a short while before
            // calling it missing.
            let give_up = std::time::Instant::now() + MISSING_TOPIC_GRACE;
            loop {
                let metadata = fetch_metadata_watching_auth(&consumer, &auth, Some(topic), timeout)?;
                let found = metadata
                    .topics()
                    .iter()
                    .find(|entry| entry.name() == topic)
                    .filter(|entry| entry.error().is_none() && !entry.partitions().is_empty())
                    .map(|entry| entry.partitions().len());
                if let Some(partitions) = found {
                    counts.insert(topic.clone(), i32::try_from(partitions).unwrap_or(i32::MAX));
                    break;
                }
                if std::time::Instant::now() >= give_up {
                    return Err(KafkaError::FetchMetadata {
                        what: topic.clone(),
                        reason: "topic does not exist".to_owned(),
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(counts)
    })
    .await
    .map_err(|_| KafkaError::Timeout {
        operation: "metadata fetch",
        timeout_ms: timeout.as_millis(),
    })?
}

/// Sets topic-level configuration (`min.insync.replicas`, `retention.ms`, ...) of an existing
/// topic. This is Kafka's non-incremental AlterConfigs: the topic's dynamic configuration becomes
/// exactly `config`, and any other value set on the topic before returns to the broker default.
pub async fn alter_topic_config(
    args: &KafkaArgs,
    topic: &str,
    config: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), KafkaError> {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let fail = |reason: String| KafkaError::AlterTopicConfig {
        topic: topic.to_owned(),
        reason,
    };
    let admin: AdminClient<DefaultClientContext> =
        args.resolve()?
            .client_config(&[])
            .create()
            .map_err(|source| KafkaError::CreateClient {
                client: "admin",
                source,
            })?;
    let alteration = config.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(topic)),
        |alteration, (key, value)| alteration.set(key, value),
    );
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .alter_configs([&alteration], &options)
        .await
        .map_err(|error| fail(error.to_string()))?;
    for result in results {
        if let Err((_, code)) = result {
            return Err(fail(code.to_string()));
        }
    }
    Ok(())
}

/// Runs blocking `work` on a thread of its own and resolves with its result. Unlike the
/// runtime's blocking pool, nothing waits for the thread: a future dropped at shutdown leaves it
/// to finish alone, and the process exits without it. An error means the thread could not be
/// started or ended without an answer.
async fn detached_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    // A failure to spawn drops the sender, which the receiver reports as an error.
    let _ = std::thread::Builder::new()
        .name("rebound-metadata".to_owned())
        .spawn(move || {
            let _ = sender.send(work());
        });
    receiver.await
}
