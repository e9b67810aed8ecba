//! Records held until due, per partition, in arrival (offset) order.
//!
//! Each tier has one fixed delay, so a partition's records become due roughly in offset order:
//! only the head of each partition is ever waited on, and a partition whose head is not due is
//! paused while others keep flowing. Time is tokio's [`Instant`], so the logic is tested with a
//! paused clock; the wall-clock due time is kept alongside to measure lateness.

use std::collections::{BTreeMap, VecDeque};

use rebound_kafka::{ConsumedRecord, TopicPartition};
use rebound_retry::Dispatch;
use tokio::time::Instant;

/// What to do with a held record once it is released.
#[derive(Debug, Clone)]
pub enum ReleaseAction {
    /// Republish it unchanged to its source topic.
    Republish {
        /// The record's `retry.original.topic`.
        target_topic: String,
    },
    /// Send it to the DLQ as poison. Poison records queue behind their partition's waiting
    /// records too, so offsets are still stored strictly in order.
    DeadLetter(Box<Dispatch>),
}

impl ReleaseAction {
    /// True for a dead-letter stub, which cannot be cut down any further.
    pub fn is_stub(&self) -> bool {
        matches!(self, ReleaseAction::DeadLetter(dispatch) if dispatch.is_stub())
    }
}

/// What to do with a routable tier record, decided from its due time alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueDecision {
    /// Hold it until `due_ms` (wall clock, epoch milliseconds).
    HoldUntil {
        /// The due time it is held until.
        due_ms: i64,
    },
    /// Its due time is further ahead than the bound allows: bad input, dead-lettered as poison.
    TooFarAhead {
        /// The due time it asked for.
        due_ms: i64,
        /// The furthest due time accepted at `now_ms`.
        latest_accepted_ms: i64,
    },
}

/// The due time a record is held until: its `retry.due.timestamp`, or without one its Kafka
/// timestamp (else now) plus the tier's fallback delay. It is never pulled in: a record released
/// before its due time breaks the promise the consumer made when it chose the tier. A due time
/// more than `max_ahead` out is bad input (a corrupted header, a clock far off) and is refused,
/// so no record parks its partition for longer. Any due time in the past means "due now";
/// bounding it below at the epoch keeps the lateness (`now - due`) from overflowing for a
/// garbled `retry.due.timestamp` such as `i64::MIN`.
pub fn due_decision(
    header_due_ms: Option<i64>,
    record_timestamp_ms: Option<i64>,
    now_ms: i64,
    fallback_delay_ms: i64,
    max_ahead: std::time::Duration,
) -> DueDecision {
    let requested_due_ms =
        header_due_ms.unwrap_or_else(|| record_timestamp_ms.unwrap_or(now_ms).saturating_add(fallback_delay_ms));
    let max_ahead_ms = i64::try_from(max_ahead.as_millis()).unwrap_or(i64::MAX);
    let latest_accepted_ms = now_ms.saturating_add(max_ahead_ms);
    if requested_due_ms > latest_accepted_ms {
        DueDecision::TooFarAhead {
            due_ms: requested_due_ms,
            latest_accepted_ms,
        }
    } else {
        DueDecision::HoldUntil {
            due_ms: requested_due_ms.max(0),
        }
    }
}

/// When, by the runtime's clock, a record due at `due_ms` may be released, `now` being
/// `now_ms` on the wall clock.
pub fn release_at(now: Instant, now_ms: i64, due_ms: i64) -> Instant {
    let wait_ms = u64::try_from(due_ms.saturating_sub(now_ms)).unwrap_or(0);
    now + std::time::Duration::from_millis(wait_ms)
}

/// A tier record waiting for its due time.
#[derive(Debug, Clone)]
pub struct HeldRecord {
    /// The record as consumed from the tier topic.
    pub record: ConsumedRecord,
    /// What to do with it when released.
    pub action: ReleaseAction,
    /// Failed attempts so far, for the log line.
    pub attempt: u32,
    /// Wall-clock due time, epoch milliseconds.
    pub due_ms: i64,
    /// When, by the runtime's clock, it may be released.
    pub release_at: Instant,
    /// True once its copy was acknowledged while an earlier record of its partition was not: it
    /// is never sent again and waits only so that offsets are stored in order. Its key, value
    /// and headers are dropped then, as nothing needs them any more.
    pub sent: bool,
}

impl HeldRecord {
    /// The bytes it keeps in memory: key, value and headers. What the byte read-ahead counts.
    pub fn size_bytes(&self) -> usize {
        let record = &self.record;
        let headers: usize = record
            .headers
            .iter()
            .map(|header| header.key.len() + header.value.as_ref().map_or(0, Vec::len))
            .sum();
        record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len) + headers
    }

    /// Marks it acknowledged and drops its payload: see [`HeldRecord::sent`].
    pub fn mark_sent(&mut self) {
        self.sent = true;
        self.record.key = None;
        self.record.value = None;
        self.record.headers = rebound_retry::RecordHeaders::new();
    }
}

/// How far ahead of its due records a partition is read: by count, by time (there is no use
/// holding records due long after the next fetch could bring them), and by the bytes held in all
/// partitions together (what bounds memory whatever the records' size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAhead {
    /// Most records held per partition.
    pub max_records: usize,
    /// Most time between now and the newest held record's release.
    pub max_time: std::time::Duration,
    /// Most bytes held across all partitions.
    pub max_bytes: usize,
}

/// What to do with a partition's fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchDecision {
    /// Stop fetching: enough is held.
    Pause,
    /// Fetch again: what is held runs out soon.
    Resume,
    /// Leave it as it is.
    Keep,
}

impl ReadAhead {
    /// Decides for one partition. A partition pauses when it holds `max_records`, or records
    /// reaching `max_time` ahead, or when all partitions together hold `max_bytes`; it resumes
    /// only when all three have fallen to half. The gap between the thresholds keeps it from
    /// flapping, and resuming while half the time is still held gives the fetch that long to
    /// bring the next records before they are due. The byte rule applies to every partition,
    /// those holding nothing included, because it bounds what the next fetch of any of them adds.
    pub fn decide(
        &self,
        held: usize,
        horizon: Option<Instant>,
        total_bytes: usize,
        now: Instant,
        paused: bool,
    ) -> FetchDecision {
        let ahead = horizon.map_or(std::time::Duration::ZERO, |horizon| {
            horizon.saturating_duration_since(now)
        });
        if !paused && (held >= self.max_records || ahead >= self.max_time || total_bytes >= self.max_bytes) {
            FetchDecision::Pause
        } else if paused
            && held <= self.max_records / 2
            && ahead <= self.max_time / 2
            && total_bytes <= self.max_bytes / 2
        {
            FetchDecision::Resume
        } else {
            FetchDecision::Keep
        }
    }
}

/// All held records of this scheduler instance.
#[derive(Debug, Default)]
pub struct Holdings {
    partitions: BTreeMap<TopicPartition, VecDeque<HeldRecord>>,
    /// Sum of [`HeldRecord::size_bytes`] over everything held.
    bytes: usize,
}

impl Holdings {
    /// Appends a record to its partition's queue.
    pub fn hold(&mut self, held: HeldRecord) {
        let key = TopicPartition {
            topic: held.record.topic.clone(),
            partition: held.record.partition,
        };
        self.bytes += held.size_bytes();
        self.partitions.entry(key).or_default().push_back(held);
    }

    /// Puts records back at the front of their partition's queue, keeping their order, to be
    /// released again no earlier than `not_before` (used after a refused republish).
    pub fn hold_again_at_front(&mut self, records: Vec<HeldRecord>, not_before: Instant) {
        for mut held in records.into_iter().rev() {
            held.release_at = held.release_at.max(not_before);
            let key = TopicPartition {
                topic: held.record.topic.clone(),
                partition: held.record.partition,
            };
            self.bytes += held.size_bytes();
            self.partitions.entry(key).or_default().push_front(held);
        }
    }

    /// The earliest release time among partition heads.
    pub fn next_release_at(&self) -> Option<Instant> {
        self.partitions
            .values()
            .filter_map(|queue| queue.front().map(|held| held.release_at))
            .min()
    }

    /// Takes, from every partition, the run of records at its head whose release time has come,
    /// in offset order. A record behind one that is not due stays, even if it is due itself:
    /// offsets are committed in order, so releasing it would not let the partition move on.
    #[cfg(test)]
    pub fn take_due(&mut self, now: Instant) -> Vec<HeldRecord> {
        let mut due = Vec::new();
        for queue in self.partitions.values_mut() {
            while queue.front().is_some_and(|held| held.release_at <= now) {
                if let Some(held) = queue.pop_front() {
                    self.bytes = self.bytes.saturating_sub(held.size_bytes());
                    due.push(held);
                }
            }
        }
        self.partitions.retain(|_, queue| !queue.is_empty());
        due
    }

    /// Takes, from every partition `is_assigned` says this member owns, the run of records at
    /// its head whose release time has come, in offset order (as `take_due` does for all).
    /// Records of any other partition stay where they are, due or not: a copy sent from here
    /// would be a second one next to the new owner's, and dropping them while the partition is
    /// in fact still owned would let later offsets be stored past them. The revocation that took
    /// the partition away drops them ([`Holdings::forget`]).
    pub fn take_due_assigned(
        &mut self,
        now: Instant,
        is_assigned: impl Fn(&TopicPartition) -> bool,
    ) -> Vec<HeldRecord> {
        let mut due = Vec::new();
        for (partition, queue) in &mut self.partitions {
            if !is_assigned(partition) {
                continue;
            }
            while queue.front().is_some_and(|held| held.release_at <= now) {
                if let Some(held) = queue.pop_front() {
                    self.bytes = self.bytes.saturating_sub(held.size_bytes());
                    due.push(held);
                }
            }
        }
        self.partitions.retain(|_, queue| !queue.is_empty());
        due
    }

    /// Bytes held across all partitions.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when the partition has records waiting (and so must stay paused).
    #[cfg(test)]
    pub fn is_waiting(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .get(&TopicPartition {
                topic: topic.to_owned(),
                partition,
            })
            .is_some_and(|queue| !queue.is_empty())
    }

    /// Drops everything held for partitions this member lost; their offsets were not stored, so
    /// the new owner reads them again.
    pub fn forget(&mut self, partitions: &[TopicPartition]) -> usize {
        let mut dropped = 0;
        for queue in partitions
            .iter()
            .filter_map(|partition| self.partitions.remove(partition))
        {
            dropped += queue.len();
            let bytes: usize = queue.iter().map(HeldRecord::size_bytes).sum();
            self.bytes = self.bytes.saturating_sub(bytes);
        }
        dropped
    }

    /// Partitions that have records waiting, with how many and when the newest of them may be
    /// released (how far ahead the partition has been read).
    pub fn partition_horizons(&self) -> impl Iterator<Item = (&TopicPartition, usize, Instant)> {
        self.partitions.iter().filter_map(|(partition, queue)| {
            // Records of one tier share a delay, so the newest is the last one in offset order;
            // the maximum is taken anyway, for records whose producers' clocks disagree.
            let horizon = queue.iter().rev().take(8).map(|held| held.release_at).max()?;
            Some((partition, queue.len(), horizon))
        })
    }

    /// Records waiting per tier topic.
    pub fn waiting_per_topic(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for (partition, queue) in &self.partitions {
            *counts.entry(partition.topic.as_str()).or_default() += queue.len();
        }
        counts
    }

    /// Every record held.
    pub fn len(&self) -> usize {
        self.partitions.values().map(VecDeque::len).sum()
    }

    /// True when nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rebound_retry::RecordHeaders;

    use super::*;

    fn held(partition: i32, offset: i64, release_at: Instant) -> HeldRecord {
        HeldRecord {
            record: ConsumedRecord {
                topic: "retry-5s".to_owned(),
                partition,
                offset,
                timestamp_ms: None,
                key: None,
                value: None,
                headers: RecordHeaders::new(),
            },
            action: ReleaseAction::Republish {
                target_topic: "notes".to_owned(),
            },
            attempt: 1,
            due_ms: 0,
            release_at,
            sent: false,
        }
    }

    fn sized(partition: i32, offset: i64, release_at: Instant, bytes: usize) -> HeldRecord {
        let mut record = held(partition, offset, release_at);
        record.record.value = Some(vec![0; bytes]);
        record
    }

    fn retry_5s(partition: i32) -> TopicPartition {
        TopicPartition {
            topic: "retry-5s".to_owned(),
            partition,
        }
    }

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    #[test]
    fn due_times_before_the_epoch_are_due_now_and_keep_lateness_finite() {
        let now_ms = 1_764_300_000_000;
        for requested in [i64::MIN, -1_700_000_000_000, -1] {
            let decision = due_decision(Some(requested), None, now_ms, 5000, 30 * DAY);
            assert_eq!(decision, DueDecision::HoldUntil { due_ms: 0 });
            assert!(now_ms.checked_sub(0).is_some(), "lateness of {requested} overflows");
        }
        assert_eq!(
            due_decision(Some(now_ms + 5000), None, now_ms, 5000, 30 * DAY),
            DueDecision::HoldUntil { due_ms: now_ms + 5000 }
        );
        assert_eq!(
            due_decision(None, Some(now_ms - 1000), now_ms, 5000, 30 * DAY),
            DueDecision::HoldUntil { due_ms: now_ms + 4000 },
            "without the header: the record's timestamp plus the fallback delay"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_due_in_six_hours_is_held_six_hours_whatever_the_tier_fallback_delay() {
        // A consumer tier `retry-6h:6h` served by a scheduler given `--tier retry-6h` (fallback
        // delay 0): the record's own due time rules, not the scheduler's idea of the tier.
        let start = Instant::now();
        let now_ms = 1_764_300_000_000;
        let six_hours = Duration::from_secs(6 * 60 * 60);
        let due_ms = now_ms + 6 * 60 * 60 * 1000;
        let decision = due_decision(Some(due_ms), None, now_ms, 0, 30 * DAY);
        assert_eq!(decision, DueDecision::HoldUntil { due_ms });
        let DueDecision::HoldUntil { due_ms: held_until } = decision else {
            unreachable!("asserted above");
        };
        let mut holdings = Holdings::default();
        holdings.hold(held(0, 1, release_at(start, now_ms, held_until)));
        tokio::time::advance(six_hours - Duration::from_millis(1)).await;
        assert!(
            holdings.take_due(Instant::now()).is_empty(),
            "released {:?} early",
            start + six_hours - Instant::now()
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(offsets(&holdings.take_due(Instant::now())), vec![(0, 1)]);
    }

    #[test]
    fn a_due_time_beyond_the_bound_is_refused_not_pulled_in() {
        let now_ms = 1_764_300_000_000;
        let bound_ms = 30 * 24 * 60 * 60 * 1000;
        assert_eq!(
            due_decision(Some(now_ms + bound_ms), None, now_ms, 5000, 30 * DAY),
            DueDecision::HoldUntil {
                due_ms: now_ms + bound_ms
            },
            "exactly at the bound is accepted"
        );
        for due_ms in [now_ms + bound_ms + 1, i64::MAX] {
            assert_eq!(
                due_decision(Some(due_ms), None, now_ms, 5000, 30 * DAY),
                DueDecision::TooFarAhead {
                    due_ms,
                    latest_accepted_ms: now_ms + bound_ms
                }
            );
        }
    }

    fn offsets(records: &[HeldRecord]) -> Vec<(i32, i64)> {
        records
            .iter()
            .map(|held| (held.record.partition, held.record.offset))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_released_before_its_time() {
        let start = Instant::now();
        let mut holdings = Holdings::default();
        holdings.hold(held(0, 1, start + Duration::from_secs(5)));
        assert_eq!(holdings.next_release_at(), Some(start + Duration::from_secs(5)));
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(holdings.take_due(Instant::now()).is_empty());
        tokio::time::sleep_until(holdings.next_release_at().expect("held")).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(offsets(&holdings.take_due(Instant::now())), vec![(0, 1)]);
        assert!(holdings.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_partition_does_not_block_others() {
        let start = Instant::now();
        let mut holdings = Holdings::default();
        holdings.hold(held(0, 1, start + Duration::from_secs(60)));
        holdings.hold(held(1, 1, start + Duration::from_secs(1)));
        holdings.hold(held(1, 2, start + Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(offsets(&holdings.take_due(Instant::now())), vec![(1, 1), (1, 2)]);
        assert!(holdings.is_waiting("retry-5s", 0));
        assert!(!holdings.is_waiting("retry-5s", 1));
        assert_eq!(holdings.next_release_at(), Some(start + Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_record_behind_a_waiting_head_stays_in_order() {
        let start = Instant::now();
        let mut holdings = Holdings::default();
        holdings.hold(held(0, 1, start + Duration::from_secs(10)));
        holdings.hold(held(0, 2, start));
        assert!(holdings.take_due(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(offsets(&holdings.take_due(Instant::now())), vec![(0, 1), (0, 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_records_go_back_in_order_and_wait_for_the_backoff() {
        let start = Instant::now();
        let mut holdings = Holdings::default();
        holdings.hold(held(0, 3, start));
        let taken = vec![held(0, 1, start), held(0, 2, start)];
        holdings.hold_again_at_front(taken, start + Duration::from_millis(500));
        assert!(
            holdings.take_due(Instant::now()).is_empty(),
            "the head waits for the backoff"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            offsets(&holdings.take_due(Instant::now())),
            vec![(0, 1), (0, 2), (0, 3)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn read_ahead_pauses_on_count_or_time_and_resumes_when_both_are_at_half() {
        let limits = ReadAhead {
            max_records: 100,
            max_time: Duration::from_secs(4),
            max_bytes: usize::MAX,
        };
        let now = Instant::now();
        let soon = Some(now + Duration::from_secs(1));
        let far = Some(now + Duration::from_secs(4));
        assert_eq!(limits.decide(10, soon, 0, now, false), FetchDecision::Keep);
        assert_eq!(limits.decide(100, soon, 0, now, false), FetchDecision::Pause, "count");
        assert_eq!(limits.decide(10, far, 0, now, false), FetchDecision::Pause, "time");
        assert_eq!(
            limits.decide(60, soon, 0, now, true),
            FetchDecision::Keep,
            "count above half"
        );
        assert_eq!(
            limits.decide(10, Some(now + Duration::from_secs(3)), 0, now, true),
            FetchDecision::Keep,
            "time above half"
        );
        assert_eq!(limits.decide(50, soon, 0, now, true), FetchDecision::Resume);
        assert_eq!(
            limits.decide(0, None, 0, now, true),
            FetchDecision::Resume,
            "nothing held"
        );
        // As the clock moves on, the same holdings run out of time ahead and fetching resumes.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(limits.decide(10, far, 0, Instant::now(), true), FetchDecision::Resume);
    }

    #[tokio::test(start_paused = true)]
    async fn horizon_is_the_newest_release_time_of_a_partition() {
        let now = Instant::now();
        let mut holdings = Holdings::default();
        holdings.hold(held(0, 1, now + Duration::from_secs(1)));
        holdings.hold(held(0, 2, now + Duration::from_secs(3)));
        holdings.hold(held(1, 1, now + Duration::from_secs(2)));
        let horizons: Vec<(i32, usize, Instant)> = holdings
            .partition_horizons()
            .map(|(partition, count, horizon)| (partition.partition, count, horizon))
            .collect();
        assert_eq!(
            horizons,
            vec![
                (0, 2, now + Duration::from_secs(3)),
                (1, 1, now + Duration::from_secs(2))
            ]
        );
    }

    #[test]
    fn forgetting_a_revoked_partition_drops_only_its_records() {
        let now = Instant::now();
        let mut holdings = Holdings::default();
        holdings.hold(held(0, 1, now));
        holdings.hold(held(1, 1, now));
        let dropped = holdings.forget(&[TopicPartition {
            topic: "retry-5s".to_owned(),
            partition: 0,
        }]);
        assert_eq!(dropped, 1);
        assert_eq!(holdings.len(), 1);
        assert_eq!(holdings.waiting_per_topic().get("retry-5s"), Some(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn read_ahead_pauses_every_partition_at_the_byte_bound_and_resumes_at_half() {
        let limits = ReadAhead {
            max_records: 5000,
            max_time: Duration::from_secs(4),
            max_bytes: 64 << 20,
        };
        let now = Instant::now();
        let soon = Some(now + Duration::from_secs(1));
        assert_eq!(limits.decide(10, soon, 63 << 20, now, false), FetchDecision::Keep);
        assert_eq!(
            limits.decide(10, soon, 64 << 20, now, false),
            FetchDecision::Pause,
            "bytes"
        );
        assert_eq!(
            limits.decide(0, None, 64 << 20, now, false),
            FetchDecision::Pause,
            "a partition holding nothing stops fetching too: the bound is for all together"
        );
        assert_eq!(
            limits.decide(10, soon, 33 << 20, now, true),
            FetchDecision::Keep,
            "bytes above half"
        );
        assert_eq!(limits.decide(10, soon, 32 << 20, now, true), FetchDecision::Resume);
        assert_eq!(
            limits.decide(6000, soon, 0, now, true),
            FetchDecision::Keep,
            "the count rule still holds"
        );
    }

    #[test]
    fn held_bytes_follow_what_is_held_taken_and_forgotten() {
        let now = Instant::now();
        let mut holdings = Holdings::default();
        holdings.hold(sized(0, 1, now, 1000));
        holdings.hold(sized(0, 2, now + Duration::from_secs(60), 2000));
        holdings.hold(sized(1, 1, now + Duration::from_secs(60), 4000));
        assert_eq!(holdings.bytes(), 7000);
        let taken = holdings.take_due(now);
        assert_eq!(holdings.bytes(), 6000);
        holdings.hold_again_at_front(taken, now);
        assert_eq!(holdings.bytes(), 7000);
        holdings.forget(&[retry_5s(1)]);
        assert_eq!(holdings.bytes(), 3000);
        let mut sent = holdings.take_due(now);
        sent.iter_mut().for_each(HeldRecord::mark_sent);
        holdings.hold_again_at_front(sent, now);
        assert_eq!(holdings.bytes(), 2000, "an acknowledged record keeps no payload");
    }

    #[test]
    fn records_of_a_partition_no_longer_assigned_are_never_released() {
        let now = Instant::now();
        let mut holdings = Holdings::default();
        holdings.hold(held(0, 1, now));
        holdings.hold(held(1, 1, now));
        // Partition 0 is not assigned to this member (any more): its record is due, and must
        // not go out from here.
        let assigned = [retry_5s(1)];
        let due = holdings.take_due_assigned(now, |partition| assigned.contains(partition));
        assert_eq!(offsets(&due), vec![(1, 1)], "only the assigned partition's record");
        // It stays held, not dropped: dropping records of a partition still owned would let
        // later offsets be stored past them. A revocation drops them (`forget`).
        assert!(holdings.is_waiting("retry-5s", 0));
    }
}
