//! Synthetic but realistic note changes for demos and benchmarks: a pool of notes edited
//! several times each (versions strictly increasing per note), some deleted, titles and bodies
//! of varied size with non-ASCII text, all from a seed so runs repeat.

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use rebound_schema::Note;

const WORDS: &[&str] = &[
    "meeting",
    "groceries",
    "idea",
    "draft",
    "call",
    "plan",
    "book",
    "trip",
    "budget",
    "recipe",
    "café",
    "naïve",
    "résumé",
    "日本語",
    "Grüße",
    "🚀",
    "todo",
    "review",
    "garden",
    "invoice",
    "renewal",
    "piano",
    "München",
    "über",
];
const TAGS: &[&str] = &["work", "home", "later", "urgent", "ideas", "travel", "health", "family"];
const DEVICES: &[&str] = &["phone", "laptop", "tablet", "web", "watch"];

/// Generates note versions from a seed.
#[derive(Debug)]
pub struct NoteGenerator {
    random: SmallRng,
    run_id: String,
    next_versions: Vec<i64>,
    deleted: Vec<bool>,
    base_time_ms: i64,
    generated: u64,
}

impl NoteGenerator {
    /// A generator over `distinct_notes` notes; `run_id` keeps ids of different runs apart.
    pub fn new(seed: u64, distinct_notes: usize, run_id: &str, base_time_ms: i64) -> Self {
        let distinct_notes = distinct_notes.max(1);
        Self {
            random: SmallRng::seed_from_u64(seed),
            run_id: run_id.to_owned(),
            next_versions: vec![1; distinct_notes],
            deleted: vec![false; distinct_notes],
            base_time_ms,
            generated: 0,
        }
    }

    /// The next note change: a new version of a randomly chosen note.
    pub fn next_note(&mut self) -> Note {
        let index = self.random.random_range(0..self.next_versions.len());
        let version = self.next_versions[index];
        self.next_versions[index] += 1;
        // A deleted note may be restored later by a newer version, as sync clients do.
        let deleted = version > 1 && self.random.random_bool(0.05);
        self.deleted[index] = deleted;
        let title_words = self.random.random_range(1..6);
        let title = self.words(title_words);
        // Mostly short bodies, a long tail of large ones (up to about 4 KiB).
        let body_words = if self.random.random_bool(0.1) {
            self.random.random_range(200..600)
        } else {
            self.random.random_range(5..60)
        };
        let body = if deleted { String::new() } else { self.words(body_words) };
        let tag_count = self.random.random_range(0..4);
        let tags = (0..tag_count)
            .map(|_| TAGS[self.random.random_range(0..TAGS.len())].to_owned())
            .collect();
        self.generated += 1;
        Note {
            note_id: format!("{}-{index:06}", self.run_id),
            user_id: format!("user-{:04}", index % 997),
            device_id: DEVICES[self.random.random_range(0..DEVICES.len())].to_owned(),
            version,
            title,
            body,
            tags,
            updated_at: self.base_time_ms + i64::try_from(self.generated).unwrap_or(i64::MAX),
            deleted,
            pinned: self.random.random_bool(0.1),
        }
    }

    fn words(&mut self, count: usize) -> String {
        let mut text = String::new();
        for position in 0..count {
            if position > 0 {
                text.push(' ');
            }
            text.push_str(WORDS[self.random.random_range(0..WORDS.len())]);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn versions_increase_per_note_and_the_seed_repeats_the_run() {
        let mut generator = NoteGenerator::new(42, 50, "t", 0);
        let notes: Vec<Note> = (0..1000).map(|_| generator.next_note()).collect();
        let mut last: HashMap<&str, i64> = HashMap::new();
        for note in &notes {
            let previous = last.insert(&note.note_id, note.version);
            assert_eq!(note.version, previous.unwrap_or(0) + 1);
        }
        assert!(notes.iter().any(|note| note.deleted));
        assert!(notes.iter().any(|note| note.body.len() > 1000));
        assert!(notes.iter().any(|note| !note.title.is_ascii()));
        let mut again = NoteGenerator::new(42, 50, "t", 0);
        assert_eq!(again.next_note(), notes[0]);
    }
}
