//! The PostgreSQL sink: one row per note in `notes`, upserted only when the incoming version is
//! higher than the stored one (the same rule as SQLite), one transaction per batch, on a pool of
//! connections (deadpool) sized by `--postgres-pool-size`.
//!
//! Which failure fails what:
//! - a constraint or data error (SQLSTATE classes 23 and 22: a CHECK an operator added, a value
//!   the column refuses) fails that note alone, permanently. The batch is first written with its
//!   statements pipelined in one transaction; if one of them hits such an error, the transaction
//!   is rolled back and the batch written again with a savepoint per note, so the bad note is
//!   rolled back alone and every other note still commits;
//! - everything else (connection refused or lost, serialization failure, deadlock, a statement
//!   timeout, the server shutting down, a missing table, a commit without an answer) fails the
//!   whole batch transiently: nothing of it may have been applied, and trying later can help;
//! - a batch that takes longer than `--postgres-timeout`, connecting included, fails
//!   transiently as a whole; its transaction is rolled back when the connection is dropped.
//!
//! A commit whose answer is lost may have been applied: the batch is then tried again, which the
//! version rule makes a no-op where it already happened.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rebound_sink_store::{
    POSTGRES_JOURNAL_INSERT_SQL, POSTGRES_JOURNAL_SCHEMA_SQL, POSTGRES_UPSERT_SQL, PostgresNoteParams,
    PostgresSinkSpec, PostgresTlsArgs, describe_postgres_error, migrate_postgres_notes, postgres_tls_connector,
};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::{ApplyBatchFuture, ApplyItem, ApplyOutcome, Sink, SinkFailure};
use crate::ConsumerError;

/// What a PostgreSQL sink is opened with.
#[derive(Debug, Clone)]
pub struct PostgresSinkSettings {
    /// The database, from `--sink`.
    pub spec: PostgresSinkSpec,
    /// Whom to trust when the connection is encrypted.
    pub tls: PostgresTlsArgs,
    /// Most connections kept open.
    pub pool_size: usize,
    /// Bound on one batch, connecting included.
    pub timeout: Duration,
    /// Whether every delivery also gets a `deliveries` row.
    pub journal: bool,
}

/// The PostgreSQL sink.
pub struct PostgresSink {
    pool: Pool,
    spec: PostgresSinkSpec,
    timeout: Duration,
    journal: bool,
}

/// The URL carries the password: show it redacted.
impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresSink")
            .field("sink", &self.spec.redacted())
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

/// How a failed statement fails the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// The note's own data: a constraint or data error (SQLSTATE classes 23 and 22).
    Note,
    /// Anything else: the connection, the server, a conflict with another transaction.
    Batch,
}

fn blame(error: &tokio_postgres::Error) -> Blame {
    match error.code().map(tokio_postgres::error::SqlState::code) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => Blame::Note,
        _ => Blame::Batch,
    }
}

/// 25P02: a statement sent after an earlier one of the same transaction failed. Pipelined
/// statements after the bad one all fail so; they say nothing about their own note.
fn is_in_failed_transaction(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
}

impl PostgresSink {
    /// Connects, then creates or migrates the notes table (and the journal when asked), so a bad
    /// URL, password or certificate stops the consumer at start-up with the reason.
    pub async fn open(settings: PostgresSinkSettings) -> Result<Self, ConsumerError> {
        let sink = settings.spec.redacted();
        let open_error = |reason: String| ConsumerError::OpenSink {
            sink: sink.clone(),
            reason: settings.spec.scrub(&reason),
        };
        let connector = postgres_tls_connector(&settings.tls).map_err(|error| open_error(error.to_string()))?;
        let manager = Manager::from_config(
            settings.spec.config().clone(),
            connector,
            ManagerConfig {
                // A connection returned to the pool is checked before reuse only by its state,
                // not by a round trip: a broken one fails the batch transiently and is dropped.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|error| open_error(error.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|error| open_error(describe_pool_error(&error)))?;
        let migrated = migrate_postgres_notes(&mut client, &settings.spec)
            .await
            .map_err(|error| open_error(error.to_string()))?;
        if migrated.from != migrated.to {
            tracing::info!(sink = %sink, from = migrated.from, to = migrated.to, "sink schema migrated");
        }
        if settings.journal {
            client
                .batch_execute(POSTGRES_JOURNAL_SCHEMA_SQL)
                .await
                .map_err(|error| {
                    open_error(format!(
                        "cannot create the delivery journal: {}",
                        describe_postgres_error(&error)
                    ))
                })?;
        }
        drop(client);
        Ok(Self {
            pool,
            spec: settings.spec,
            timeout: settings.timeout,
            journal: settings.journal,
        })
    }

    /// Applies the batch in one transaction, bounded by the timeout; one outcome per item.
    pub async fn apply_batch(&self, items: Vec<ApplyItem>) -> Vec<ApplyOutcome> {
        let count = items.len();
        if count == 0 {
            return Vec::new();
        }
        match tokio::time::timeout(self.timeout, self.apply_in_transaction(&items)).await {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(failure)) => vec![Err(failure); count],
            Err(_) => vec![
                Err(SinkFailure::transient(format!(
                    "postgresql sink did not finish the batch within {}",
                    humantime::format_duration(self.timeout)
                )));
                count
            ],
        }
    }

    async fn apply_in_transaction(&self, items: &[ApplyItem]) -> Result<Vec<ApplyOutcome>, SinkFailure> {
        let mut client = self.pool.get().await.map_err(|error| {
            SinkFailure::transient(format!(
                "postgresql sink has no connection: {}",
                describe_pool_error(&error)
            ))
        })?;
        let mut outcomes: Vec<ApplyOutcome> = vec![Ok(()); items.len()];
        // Rows are locked in note-id order (the sort is stable, so a note's versions keep their
        // order): two consumers writing overlapping notes during a rebalance cannot deadlock.
        let mut order: Vec<usize> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            if item.note.note_id.is_empty() {
                outcomes[index] = Err(SinkFailure::permanent("note_id is empty"));
            } else {
                order.push(index);
            }
        }
        order.sort_by(|left, right| items[*left].note.note_id.cmp(&items[*right].note.note_id));
        let batch_failure = |error: &tokio_postgres::Error| {
            SinkFailure::transient(format!(
                "postgresql transaction failed: {}",
                describe_postgres_error(error)
            ))
        };
        let transaction = client.transaction().await.map_err(|error| batch_failure(&error))?;
        match self.write_pipelined(&transaction, items, &order).await {
            Ok(()) => {
                transaction.commit().await.map_err(|error| batch_failure(&error))?;
                return Ok(outcomes);
            }
            Err(error) if blame(&error) == Blame::Batch => return Err(batch_failure(&error)),
            Err(_) => {
                // A note's own data failed a statement: write the batch again, note by note.
                transaction.rollback().await.map_err(|error| batch_failure(&error))?;
            }
        }
        let mut transaction = client.transaction().await.map_err(|error| batch_failure(&error))?;
        for &index in &order {
            let savepoint = transaction
                .savepoint("note")
                .await
                .map_err(|error| batch_failure(&error))?;
            match self.write_one(&savepoint, &items[index]).await {
                Ok(()) => savepoint.commit().await.map_err(|error| batch_failure(&error))?,
                Err(error) if blame(&error) == Blame::Note => {
                    savepoint.rollback().await.map_err(|error| batch_failure(&error))?;
                    outcomes[index] = Err(SinkFailure::permanent(format!(
                        "postgresql rejected note: {}",
                        describe_postgres_error(&error)
                    )));
                }
                Err(error) => return Err(batch_failure(&error)),
            }
        }
        transaction.commit().await.map_err(|error| batch_failure(&error))?;
        Ok(outcomes)
    }

    /// Sends every upsert (and journal row) of the batch without waiting for each answer: one
    /// round trip for the batch instead of one per note. The first error that is not the
    /// consequence of an earlier one is returned.
    async fn write_pipelined(
        &self,
        transaction: &Transaction<'_>,
        items: &[ApplyItem],
        order: &[usize],
    ) -> Result<(), tokio_postgres::Error> {
        let upsert = transaction.prepare(POSTGRES_UPSERT_SQL).await?;
        let params: Vec<PostgresNoteParams<'_>> = order
            .iter()
            .map(|&index| {
                let item = &items[index];
                PostgresNoteParams::new(&item.note, item.previous_attempts, item.last_tier.as_deref())
            })
            .collect();
        let param_lists: Vec<[&(dyn ToSql + Sync); 12]> = params.iter().map(PostgresNoteParams::as_params).collect();
        let changed = futures::future::join_all(
            param_lists
                .iter()
                .map(|param_list| transaction.execute(&upsert, param_list)),
        )
        .await;
        let changed = first_cause(changed)?;
        if self.journal {
            let insert = transaction.prepare(POSTGRES_JOURNAL_INSERT_SQL).await?;
            let rows: Vec<(i64, i64)> = order
                .iter()
                .zip(&changed)
                .map(|(&index, &changed)| {
                    (
                        i64::from(items[index].previous_attempts),
                        i64::try_from(changed).unwrap_or(i64::MAX),
                    )
                })
                .collect();
            let param_lists: Vec<[&(dyn ToSql + Sync); 4]> = order
                .iter()
                .zip(&rows)
                .map(|(&index, (attempts, changed))| {
                    let note = &items[index].note;
                    [&note.note_id as &(dyn ToSql + Sync), &note.version, attempts, changed]
                })
                .collect();
            let inserted = futures::future::join_all(
                param_lists
                    .iter()
                    .map(|param_list| transaction.execute(&insert, param_list)),
            )
            .await;
            first_cause(inserted)?;
        }
        Ok(())
    }

    /// Writes one note (and its journal row) and waits for the answer.
    async fn write_one(&self, transaction: &Transaction<'_>, item: &ApplyItem) -> Result<(), tokio_postgres::Error> {
        let params = PostgresNoteParams::new(&item.note, item.previous_attempts, item.last_tier.as_deref());
        let changed = transaction.execute(POSTGRES_UPSERT_SQL, &params.as_params()).await?;
        if self.journal {
            let attempts = i64::from(item.previous_attempts);
            let changed = i64::try_from(changed).unwrap_or(i64::MAX);
            transaction
                .execute(
                    POSTGRES_JOURNAL_INSERT_SQL,
                    &[&item.note.note_id, &item.note.version, &attempts, &changed],
                )
                .await?;
        }
        Ok(())
    }
}

/// The values, or the first error that is not merely "the transaction already failed".
fn first_cause(results: Vec<Result<u64, tokio_postgres::Error>>) -> Result<Vec<u64>, tokio_postgres::Error> {
    let mut values = Vec::with_capacity(results.len());
    let mut consequence = None;
    for result in results {
        match result {
            Ok(value) => values.push(value),
            Err(error) if is_in_failed_transaction(&error) => {
                consequence.get_or_insert(error);
            }
            Err(error) => return Err(error),
        }
    }
    match consequence {
        Some(error) => Err(error),
        None => Ok(values),
    }
}

fn describe_pool_error(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(error) => describe_postgres_error(error),
        other => other.to_string(),
    }
}

impl Sink for PostgresSink {
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_> {
        Box::pin(PostgresSink::apply_batch(self, items))
    }
}
