//! Topic administration: idempotent creation of the pipeline's topics and partition lookups.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

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

/// Creates the topics that do not exist yet; existing ones are left untouched, so running it
/// twice is safe. Fails on the first topic the broker refuses for another reason.
pub async fn create_topics(
    args: &KafkaArgs,
    specs: &[TopicSpec],
    timeout: Duration,
) -> Result<Vec<TopicCreation>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> =
        args.resolve()?
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
            topic: specs
                .iter()
                .map(|spec| spec.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
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
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().map_err(|source| KafkaError::CreateClient {
            client: "metadata",
            source,
        })?;
        let mut counts = BTreeMap::new();
        for topic in &topics {
            // A topic created a moment ago may not be in the broker's metadata yet (a service
            // started right after `rebound topics create`); ask again for a short while before
            // calling it missing.
            let give_up = std::time::Instant::now() + MISSING_TOPIC_GRACE;
            loop {
                let metadata =
                    consumer
                        .fetch_metadata(Some(topic), timeout)
                        .map_err(|source| KafkaError::FetchMetadata {
                            what: topic.clone(),
                            reason: source.to_string(),
                        })?;
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
