//! The progress line of `rebound audit --output progress`, which `scripts/demo.sh` shows while a
//! run is under way. It is judged mid-run, so it never calls a version lost: what is neither
//! applied nor dead-lettered is either waiting in a tier (with the time until the next is due)
//! or still on its way. Only the final audit's table says `lost`.

use std::fmt::Write as _;

use crate::audit::AuditReport;

/// One line: `applied A/N | dead-lettered D | ...`, led by what the run is waiting for.
///
/// - Everything accounted for: `all N note versions accounted for: A applied or superseded, D
///   dead-lettered`.
/// - Only tier waits left: `12 notes wait in retry-1m, due in 48 s | applied A/N | dead-lettered D`.
/// - Otherwise: `applied A/N | dead-lettered D | in flight F`, plus the waits when there are any.
pub fn render_progress_line(report: &AuditReport) -> String {
    let produced = report.produced_versions;
    let applied = report.applied_or_superseded;
    let dead = report.dead_lettered();
    if report.settled() {
        return format!(
            "all {produced} note versions accounted for: {applied} applied or superseded, {dead} dead-lettered"
        );
    }
    // `lost` in a mid-run report counts versions not found anywhere yet, such as those the
    // consumer has not read: on their way, as far as a progress line can tell.
    let in_flight = report.lost;
    let counts = format!("applied {applied}/{produced} | dead-lettered {dead}");
    let waiting = report.waiting();
    match (waiting, in_flight) {
        (0, _) => format!("{counts} | in flight {in_flight}"),
        (_, 0) => format!("{} | {counts}", describe_wait(report)),
        _ => format!("{counts} | in flight {in_flight} | {}", describe_wait(report)),
    }
}

/// `12 notes wait in retry-1m, due in 48 s`, tier by tier, the soonest first, for the versions
/// waiting in tiers (empty when none is).
pub fn describe_wait(report: &AuditReport) -> String {
    let mut waits: Vec<_> = report.waiting_in_tiers.iter().collect();
    waits.sort_by_key(|(_, wait)| wait.next_due_ms);
    let mut text = String::new();
    for (index, (tier, wait)) in waits.into_iter().enumerate() {
        let separator = if index == 0 { "" } else { "; " };
        let notes = if wait.versions == 1 { "note waits" } else { "notes wait" };
        let next = until(wait.next_due_ms - report.audited_at_ms);
        let last = until(wait.last_due_ms - report.audited_at_ms);
        // A range only when it says something: copies sent within seconds of each other are
        // due within seconds too.
        let due = if next == last || wait.last_due_ms - wait.next_due_ms < 5_000 {
            next
        } else {
            format!("{next} to {last}")
        };
        let due = if due == "now" {
            "due now".to_owned()
        } else {
            format!("due in {due}")
        };
        let _ = write!(text, "{separator}{} {notes} in {tier}, {due}", wait.versions);
    }
    text
}

/// A wait in whole seconds, rounded up so that `due in 0 s` never shows while still ahead:
/// `48 s`, `1 min 05 s`, or `now` once it is due.
fn until(ms: i64) -> String {
    if ms <= 0 {
        return "now".to_owned();
    }
    let seconds = (ms + 999) / 1000;
    if seconds < 60 {
        format!("{seconds} s")
    } else {
        format!("{} min {:02} s", seconds / 60, seconds % 60)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::audit::TierWait;

    fn report(applied: usize, lost: usize, waits: &[(&str, usize, i64, i64)]) -> AuditReport {
        AuditReport {
            produced_versions: 100,
            applied_or_superseded: applied,
            dead_lettered_by_kind: BTreeMap::from([("permanent".to_owned(), 1)]),
            waiting_in_tiers: waits
                .iter()
                .map(|(tier, versions, next, last)| {
                    (
                        (*tier).to_owned(),
                        TierWait {
                            versions: *versions,
                            next_due_ms: 1_000_000 + next,
                            last_due_ms: 1_000_000 + last,
                        },
                    )
                })
                .collect(),
            lost,
            audited_at_ms: 1_000_000,
            ..AuditReport::default()
        }
    }

    #[test]
    fn a_run_waiting_only_for_a_tier_says_so_first() {
        let line = render_progress_line(&report(87, 0, &[("retry-1m", 12, 47_200, 47_200)]));
        assert_eq!(
            line,
            "12 notes wait in retry-1m, due in 48 s | applied 87/100 | dead-lettered 1"
        );
    }

    #[test]
    fn versions_not_found_yet_are_in_flight_not_lost() {
        let line = render_progress_line(&report(40, 59, &[]));
        assert_eq!(line, "applied 40/100 | dead-lettered 1 | in flight 59");
        assert!(!line.contains("lost"));
    }

    #[test]
    fn several_tiers_are_listed_soonest_first_with_their_range() {
        let line = render_progress_line(&report(
            80,
            3,
            &[("retry-1m", 10, 30_000, 65_000), ("retry-5s", 1, 0, 0)],
        ));
        assert_eq!(
            line,
            "applied 80/100 | dead-lettered 1 | in flight 3 | 1 note waits in retry-5s, due now; \
             10 notes wait in retry-1m, due in 30 s to 1 min 05 s"
        );
    }

    #[test]
    fn a_settled_run_is_summed_up() {
        assert_eq!(
            render_progress_line(&report(99, 0, &[])),
            "all 100 note versions accounted for: 99 applied or superseded, 1 dead-lettered"
        );
    }
}
