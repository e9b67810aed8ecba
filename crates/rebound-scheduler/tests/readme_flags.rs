//! The README documents every flag of this binary: a flag added in code and not in the README's
//! tables fails here, naming it.

use clap::CommandFactory as _;

#[test]
fn the_readme_documents_every_flag() {
    rebound_testkit::assert_readme_mentions_every_flag(&rebound_scheduler::SchedulerArgs::command());
}
