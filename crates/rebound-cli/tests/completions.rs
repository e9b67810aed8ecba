//! `rebound completions SHELL` prints a completion script that knows every command, so
//! `rebound dlq <TAB>` offers stats, inspect, replay and watch; an unknown shell is bad usage.

use std::process::Command;

fn rebound(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(args)
        .output()
        .expect("rebound runs")
}

#[test]
fn each_shell_gets_a_script_naming_every_dlq_command() {
    for shell in ["bash", "zsh", "fish"] {
        let output = rebound(&["completions", shell]);
        assert!(
            output.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let script = String::from_utf8_lossy(&output.stdout);
        for command in ["topics", "audit", "stats", "inspect", "replay", "watch", "completions"] {
            assert!(script.contains(command), "{shell} script lacks {command}");
        }
    }
    let unknown = rebound(&["completions", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2));
}
