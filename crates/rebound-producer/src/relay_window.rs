//! The relay's sliding window as data: which outbox rows the relay has read, which of them are
//! in flight, and which may go next. No I/O and no clock, so its rules are unit-tested directly.
//!
//! Rows enter in sequence order (acceptance order) and leave one by one as Kafka acknowledges
//! or refuses them, so the broker always has work while the outbox is read further on: the
//! window slides instead of being drained and refilled in rounds.
//!
//! Per-note order: of each note id only the oldest row in the window may be in flight or failed;
//! a later version waits in the window until the one before it has left. A note whose earlier
//! version is held back (a resend while `retry_pending_notes` is off) is held back whole, so a
//! later version never overtakes a held one either.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::outbox::OutboxEntry;

/// What became of a row the relay has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowState {
    /// Read, not sent yet: ready when it is the oldest row of its note, waiting otherwise.
    Waiting,
    /// Sent; Kafka has not answered yet.
    InFlight,
    /// Kafka did not acknowledge it, for a reason that may pass: resent after the backoff.
    Failed,
    /// Kafka refused it for what it is: sent once more alone before it is rejected.
    Refused,
}

#[derive(Debug)]
struct WindowRow {
    /// The entry; its value is moved out when the row is sent (and read again for a resend).
    entry: OutboxEntry,
    /// The value's size, counted against the window's byte bound until the row leaves.
    bytes: u64,
    state: RowState,
}

/// The rows between the outbox and Kafka. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct RelayWindow {
    rows: HashMap<i64, WindowRow>,
    /// Per note id, its rows in the window in sequence order; only the front one may be sent.
    by_note: HashMap<String, VecDeque<i64>>,
    /// Rows that may be sent now, in sequence order.
    ready: BTreeSet<i64>,
    /// Rows waiting for a resend, in sequence order.
    failed: BTreeSet<i64>,
    /// Rows refused in company, waiting to be sent alone.
    refused: BTreeSet<i64>,
    /// Notes held back whole: an earlier version is a resend that may not go now.
    held_notes: HashSet<String>,
    in_flight: usize,
    bytes: u64,
    /// The highest sequence number read: the next read starts after it.
    cursor: i64,
}

impl RelayWindow {
    /// An empty window whose next read starts after `cursor`.
    pub(crate) fn starting_after(cursor: i64) -> Self {
        Self {
            cursor,
            ..Self::default()
        }
    }

    /// The highest sequence number read so far.
    pub(crate) fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Rows in the window (held-back notes are not kept, so they do not count).
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Bytes of the values of the rows in the window.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rows sent and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether some rows wait for a resend.
    pub(crate) fn has_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Whether some rows wait to be sent alone.
    pub(crate) fn has_refused(&self) -> bool {
        !self.refused.is_empty()
    }

    /// Takes in a row read from the outbox; rows must come in increasing sequence order, each
    /// once. `held` says the row is a resend that may not go now: its note is then held back
    /// whole, this row and every later version of it.
    pub(crate) fn admit(&mut self, entry: OutboxEntry, value_bytes: u64, held: bool) {
        debug_assert!(entry.seq > self.cursor, "rows are admitted in sequence order");
        self.cursor = self.cursor.max(entry.seq);
        if held || self.held_notes.contains(&entry.note_id) {
            // Its earlier versions already in the window go on; it and every later version wait
            // in the outbox.
            self.held_notes.insert(entry.note_id);
            return;
        }
        let seq = entry.seq;
        let queue = self.by_note.entry(entry.note_id.clone()).or_default();
        queue.push_back(seq);
        if queue.len() == 1 {
            self.ready.insert(seq);
        }
        self.bytes += value_bytes;
        self.rows.insert(
            seq,
            WindowRow {
                entry,
                bytes: value_bytes,
                state: RowState::Waiting,
            },
        );
    }

    /// Takes the rows that may be sent now, oldest first, and counts them in flight. Each is the
    /// oldest row of its note in the window, and no other row of its note is in flight.
    pub(crate) fn take_ready(&mut self) -> Vec<OutboxEntry> {
        let ready = std::mem::take(&mut self.ready);
        let mut sending = Vec::with_capacity(ready.len());
        for seq in ready {
            if let Some(row) = self.rows.get_mut(&seq) {
                row.state = RowState::InFlight;
                self.in_flight += 1;
                sending.push(OutboxEntry {
                    value: std::mem::take(&mut row.entry.value),
                    ..row.entry.clone()
                });
            }
        }
        sending
    }

    /// The rows waiting for a resend, oldest first, now counted in flight again. Their values
    /// went into the records that failed: the caller reads them again from the outbox.
    pub(crate) fn take_failed(&mut self) -> Vec<i64> {
        let failed = std::mem::take(&mut self.failed);
        for seq in &failed {
            if let Some(row) = self.rows.get_mut(seq) {
                row.state = RowState::InFlight;
                self.in_flight += 1;
            }
        }
        failed.into_iter().collect()
    }

    /// The oldest row refused in company, now counted in flight again, to be sent alone.
    pub(crate) fn take_refused(&mut self) -> Option<i64> {
        let seq = self.refused.pop_first()?;
        if let Some(row) = self.rows.get_mut(&seq) {
            row.state = RowState::InFlight;
            self.in_flight += 1;
        }
        Some(seq)
    }

    /// A row in flight left the outbox's pending notes (acknowledged by Kafka, or rejected, or
    /// gone): the next version of its note, if the window holds one, may go.
    pub(crate) fn completed(&mut self, seq: i64) {
        let Some(row) = self.remove_in_flight(seq) else {
            return;
        };
        let note_id = row.entry.note_id;
        if let Some(queue) = self.by_note.get_mut(&note_id) {
            debug_assert_eq!(queue.front(), Some(&seq), "only the oldest row of a note is sent");
            queue.retain(|queued| *queued != seq);
            match queue.front() {
                Some(next) => {
                    self.ready.insert(*next);
                }
                None => {
                    self.by_note.remove(&note_id);
                }
            }
        }
    }

    /// A row in flight was not acknowledged. With `may_resend` it waits for a resend, holding
    /// back the later versions of its note; without, its note is held back whole and leaves the
    /// window (it stays in the outbox).
    pub(crate) fn failed(&mut self, seq: i64, may_resend: bool) {
        if may_resend {
            if let Some(row) = self.rows.get_mut(&seq)
                && row.state == RowState::InFlight
            {
                row.state = RowState::Failed;
                self.in_flight -= 1;
                self.failed.insert(seq);
            }
        } else if let Some(row) = self.remove_in_flight(seq) {
            // Its later versions are only waiting, never in flight: they leave with it.
            if let Some(queue) = self.by_note.remove(&row.entry.note_id) {
                for later in queue {
                    if let Some(dropped) = self.rows.remove(&later) {
                        self.bytes -= dropped.bytes;
                        self.ready.remove(&later);
                    }
                }
            }
            self.held_notes.insert(row.entry.note_id);
        }
    }

    /// A row in flight was refused by Kafka for what it is: it waits to be sent alone.
    pub(crate) fn refused(&mut self, seq: i64) {
        if let Some(row) = self.rows.get_mut(&seq)
            && row.state == RowState::InFlight
        {
            row.state = RowState::Refused;
            self.in_flight -= 1;
            self.refused.insert(seq);
        }
    }

    /// Whether any note's rows in flight are more than one, or not its oldest row: the invariant
    /// the window keeps, checked by the tests after every step.
    #[cfg(test)]
    fn per_note_order_violation(&self) -> Option<String> {
        for (note_id, queue) in &self.by_note {
            for (position, seq) in queue.iter().enumerate() {
                let state = self.rows[seq].state;
                if position > 0 && state != RowState::Waiting {
                    return Some(format!("{note_id}: row {seq} is {state:?} behind an older version"));
                }
            }
        }
        None
    }

    fn remove_in_flight(&mut self, seq: i64) -> Option<WindowRow> {
        let row = self.rows.get(&seq)?;
        if row.state != RowState::InFlight {
            return None;
        }
        let row = self.rows.remove(&seq)?;
        self.in_flight -= 1;
        self.bytes -= row.bytes;
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    fn row(seq: i64, note_id: &str, version: i64) -> OutboxEntry {
        OutboxEntry {
            seq,
            note_id: note_id.to_owned(),
            version,
            value: vec![1; 10],
            accepted_at_ms: 0,
            attempts: 0,
            traceparent: None,
        }
    }

    fn seqs(entries: &[OutboxEntry]) -> Vec<i64> {
        entries.iter().map(|entry| entry.seq).collect()
    }

    #[test]
    fn later_versions_wait_until_the_earlier_one_is_acknowledged() {
        let mut window = RelayWindow::starting_after(0);
        window.admit(row(1, "a", 1), 10, false);
        window.admit(row(2, "b", 1), 10, false);
        window.admit(row(3, "a", 2), 10, false);
        window.admit(row(4, "a", 3), 10, false);
        assert_eq!(seqs(&window.take_ready()), vec![1, 2]);
        assert!(window.take_ready().is_empty(), "a's version 2 waits for version 1");
        window.completed(2);
        assert!(window.take_ready().is_empty());
        window.completed(1);
        assert_eq!(seqs(&window.take_ready()), vec![3]);
        window.completed(3);
        assert_eq!(seqs(&window.take_ready()), vec![4]);
        window.completed(4);
        assert_eq!((window.len(), window.in_flight(), window.bytes()), (0, 0, 0));
        assert_eq!(window.cursor(), 4);
    }

    #[test]
    fn a_failed_row_is_resent_before_the_later_versions_of_its_note() {
        let mut window = RelayWindow::starting_after(0);
        window.admit(row(1, "a", 1), 10, false);
        window.admit(row(2, "a", 2), 10, false);
        assert_eq!(seqs(&window.take_ready()), vec![1]);
        window.failed(1, true);
        assert!(
            window.take_ready().is_empty(),
            "version 2 waits behind the failed version 1"
        );
        assert_eq!(window.take_failed(), vec![1]);
        window.completed(1);
        assert_eq!(seqs(&window.take_ready()), vec![2]);
    }

    #[test]
    fn a_held_resend_holds_back_its_note_but_not_the_others() {
        let mut window = RelayWindow::starting_after(0);
        window.admit(row(1, "a", 1), 10, true);
        window.admit(row(2, "b", 1), 10, false);
        window.admit(row(3, "a", 2), 10, false);
        assert_eq!(seqs(&window.take_ready()), vec![2]);
        assert_eq!(window.len(), 1, "held notes do not take room in the window");
    }

    #[test]
    fn a_failure_without_resends_holds_the_note_back_with_its_waiting_versions() {
        let mut window = RelayWindow::starting_after(0);
        window.admit(row(1, "a", 1), 10, false);
        window.admit(row(2, "a", 2), 10, false);
        window.admit(row(3, "b", 1), 10, false);
        assert_eq!(seqs(&window.take_ready()), vec![1, 3]);
        window.failed(1, false);
        window.admit(row(4, "a", 3), 10, false);
        assert!(window.take_ready().is_empty());
        window.completed(3);
        assert_eq!((window.len(), window.in_flight(), window.bytes()), (0, 0, 0));
    }

    #[test]
    fn a_refused_row_waits_to_go_alone_and_its_note_waits_with_it() {
        let mut window = RelayWindow::starting_after(0);
        window.admit(row(1, "a", 1), 10, false);
        window.admit(row(2, "a", 2), 10, false);
        window.take_ready();
        window.refused(1);
        assert!(window.has_refused());
        assert!(window.take_ready().is_empty());
        assert_eq!(window.take_refused(), Some(1));
        window.completed(1);
        assert_eq!(seqs(&window.take_ready()), vec![2]);
    }

    /// Random admissions, sends, acknowledgements, failures, resends and refusals: after every
    /// step no note has two versions in flight, and each note's versions are sent in order.
    #[test]
    fn no_note_ever_has_two_versions_in_flight_and_versions_go_in_order() {
        for seed in 0..200 {
            let mut random = SmallRng::seed_from_u64(seed);
            let mut window = RelayWindow::starting_after(0);
            let mut next_seq = 1;
            let mut next_version: HashMap<String, i64> = HashMap::new();
            let mut in_flight: Vec<OutboxEntry> = Vec::new();
            let mut sent_versions: HashMap<String, Vec<i64>> = HashMap::new();
            for _ in 0..400 {
                match random.random_range(0..6) {
                    0 | 1 => {
                        let note_id = format!("n{}", random.random_range(0..6));
                        let version = next_version.entry(note_id.clone()).or_insert(0);
                        *version += 1;
                        let held = random.random_ratio(1, 40);
                        window.admit(row(next_seq, &note_id, *version), 10, held);
                        next_seq += 1;
                    }
                    2 => {
                        for entry in window.take_ready() {
                            sent_versions
                                .entry(entry.note_id.clone())
                                .or_default()
                                .push(entry.version);
                            in_flight.push(entry);
                        }
                        for seq in window.take_failed() {
                            let entry = in_flight_row(&window, seq);
                            sent_versions
                                .entry(entry.note_id.clone())
                                .or_default()
                                .push(entry.version);
                            in_flight.push(entry);
                        }
                    }
                    3 if !in_flight.is_empty() => {
                        let entry = in_flight.swap_remove(random.random_range(0..in_flight.len()));
                        window.completed(entry.seq);
                    }
                    4 if !in_flight.is_empty() => {
                        let entry = in_flight.swap_remove(random.random_range(0..in_flight.len()));
                        window.failed(entry.seq, !random.random_ratio(1, 20));
                    }
                    5 if !in_flight.is_empty() => {
                        let entry = in_flight.swap_remove(random.random_range(0..in_flight.len()));
                        window.refused(entry.seq);
                        let seq = window.take_refused().expect("refused row");
                        assert_eq!(seq, entry.seq);
                        in_flight.push(entry);
                    }
                    _ => {}
                }
                assert_eq!(window.in_flight(), in_flight.len(), "seed {seed}");
                if let Some(violation) = window.per_note_order_violation() {
                    panic!("seed {seed}: {violation}");
                }
                let mut notes_in_flight = HashSet::new();
                for entry in &in_flight {
                    assert!(
                        notes_in_flight.insert(entry.note_id.clone()),
                        "seed {seed}: two versions of {} in flight",
                        entry.note_id
                    );
                }
            }
            for (note_id, versions) in &sent_versions {
                let mut first_sends = versions.clone();
                first_sends.dedup();
                assert!(
                    first_sends.windows(2).all(|pair| pair[0] < pair[1]),
                    "seed {seed}: {note_id} sent out of order: {versions:?}"
                );
            }
        }
    }

    fn in_flight_row(window: &RelayWindow, seq: i64) -> OutboxEntry {
        window.rows[&seq].entry.clone()
    }
}
