//! The demo's progress line, replayed on the audits of a real `scripts/demo.sh` run
//! (`fixtures/demo-audit-sequence.jsonl`: `rebound audit --output json` every few seconds, from
//! the first audit after the consumer started to the settled end). The run ended with lost = 0,
//! so no line of it may call a version lost, though for a minute 12 versions were neither
//! applied nor dead-lettered; while they wait in `retry-1m` the line says so, with the time until
//! they are due.

use rebound_cli::{AuditReport, render_progress_line};

fn recorded_sequence() -> Vec<AuditReport> {
    include_str!("fixtures/demo-audit-sequence.jsonl")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("audit {} of the recording: {error}", index + 1))
        })
        .collect()
}

#[test]
fn no_progress_line_of_a_run_that_ends_with_nothing_lost_says_lost() {
    let audits = recorded_sequence();
    assert!(audits.len() >= 5, "a recording of a whole run: {} audits", audits.len());
    let last = audits.last().expect("audits");
    assert!(
        last.settled(),
        "the run ended with every version accounted for: {last:?}"
    );
    // Versions not applied yet while they wait in a tier: what the progress line of old
    // counted as lost for a whole minute.
    assert!(
        audits.iter().filter(|audit| audit.waiting() > 0).count() >= 5,
        "the recording covers the wait for the tiers"
    );
    for audit in &audits {
        let line = render_progress_line(audit);
        assert!(!line.contains("lost"), "{line}\n(from {audit:?})");
    }
}

#[test]
fn while_versions_wait_in_retry_1m_the_line_says_how_many_and_when_they_are_due() {
    let audits = recorded_sequence();
    let waiting_alone: Vec<String> = audits
        .iter()
        .filter(|audit| audit.lost == 0 && audit.waiting_in_tiers.contains_key("retry-1m"))
        .map(render_progress_line)
        .collect();
    assert!(
        !waiting_alone.is_empty(),
        "the recording has audits where only retry-1m is left"
    );
    for line in &waiting_alone {
        let wait = line.split(" | ").next().unwrap_or_default();
        let (count, rest) = wait.split_once(' ').unwrap_or_default();
        assert!(count.parse::<usize>().is_ok_and(|count| count > 0), "{line}");
        assert!(
            rest.contains("wait in retry-1m, due ") || rest.contains("waits in retry-1m, due "),
            "{line}"
        );
        assert!(line.contains("applied "), "{line}");
    }
    // The countdown runs down between audits rather than repeating one figure.
    let seconds: Vec<&str> = waiting_alone
        .iter()
        .filter_map(|line| line.split("due in ").nth(1)?.split(' ').next())
        .collect();
    assert!(
        seconds.windows(2).any(|pair| pair[0] != pair[1]) || seconds.len() < 2,
        "{waiting_alone:?}"
    );
}
