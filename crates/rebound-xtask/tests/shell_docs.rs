//! The generated man pages and completions cover every binary and every `rebound` subcommand,
//! so `man rebound-dlq-replay` and `rebound dlq <TAB>` work.

use std::collections::BTreeSet;

#[test]
fn every_binary_and_subcommand_gets_a_man_page_and_completions() {
    let out = tempfile::tempdir().expect("tempdir");
    let written = rebound_xtask::write_shell_docs(out.path()).expect("writes the shell docs");
    let man_pages: BTreeSet<String> = written
        .iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "1"))
        .filter_map(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .collect();
    for page in [
        "rebound",
        "rebound-topics-create",
        "rebound-topics-delete",
        "rebound-audit",
        "rebound-dlq-stats",
        "rebound-dlq-inspect",
        "rebound-dlq-replay",
        "rebound-dlq-watch",
        "rebound-completions",
        "rebound-producer",
        "rebound-producer-send",
        "rebound-consumer",
        "rebound-scheduler",
    ] {
        assert!(man_pages.contains(page), "no man page {page}: {man_pages:?}");
    }
    let replay = std::fs::read_to_string(out.path().join("man/man1/rebound-dlq-replay.1")).expect("page");
    assert!(
        replay.contains("dry\\-run"),
        "the replay page documents --dry-run:\n{replay}"
    );

    for (file, expected) in [
        ("completions/bash/rebound", "inspect"),
        ("completions/zsh/_rebound", "replay"),
        ("completions/fish/rebound.fish", "watch"),
        ("completions/bash/rebound-consumer", "--sink"),
        ("completions/fish/rebound-producer.fish", "generate"),
        ("completions/zsh/_rebound-scheduler", "--read-ahead"),
    ] {
        let text = std::fs::read_to_string(out.path().join(file)).unwrap_or_else(|error| panic!("{file}: {error}"));
        assert!(text.contains(expected), "{file} lacks {expected}");
    }
}
