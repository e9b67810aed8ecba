//! Man pages and shell completions of the four rebound binaries, generated from the same clap
//! definitions the binaries parse with, so they cannot drift from the flags.
//!
//! `rebound-xtask shell-docs OUT` writes `OUT/man/man1/*.1` (one page per binary and per
//! subcommand, such as `rebound-dlq-replay.1`) and `OUT/completions/{bash,zsh,fish}/` (one file
//! per binary, named as each shell looks for it).

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;

/// The clap command of every binary the project ships.
pub fn binaries() -> Vec<clap::Command> {
    vec![
        rebound_cli::Cli::command(),
        rebound_producer::ProducerArgs::command(),
        rebound_consumer::ConsumerArgs::command(),
        rebound_scheduler::SchedulerArgs::command(),
    ]
}

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Where a shell looks for a binary's completion file, relative to `OUT/completions`.
pub fn completion_file(shell: Shell, binary: &str) -> PathBuf {
    match shell {
        Shell::Zsh => PathBuf::from("zsh").join(format!("_{binary}")),
        Shell::Fish => PathBuf::from("fish").join(format!("{binary}.fish")),
        _ => PathBuf::from(shell.to_string()).join(binary),
    }
}

/// Writes every man page and completion file under `out`; returns the files written.
pub fn write_shell_docs(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = out.join("man").join("man1");
    std::fs::create_dir_all(&man_dir)?;
    for command in binaries() {
        written.extend(write_man_pages(command, &man_dir)?);
    }
    for shell in SHELLS {
        for mut command in binaries() {
            let name = command.get_name().to_owned();
            let path = out.join("completions").join(completion_file(shell, &name));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut file = std::fs::File::create(&path)?;
            clap_complete::generate(shell, &mut command, name, &mut file);
            written.push(path);
        }
    }
    Ok(written)
}

/// A page for the command and, recursively, one for each subcommand (`rebound-dlq-replay.1`),
/// as `man rebound dlq replay` and `man rebound-dlq-replay` find them.
fn write_man_pages(command: clap::Command, man_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    // Building propagates the global flags and the version into the subcommands.
    let mut command = command;
    command.build();
    write_man_page_tree(&command, command.get_name(), man_dir, &mut written)?;
    Ok(written)
}

fn write_man_page_tree(
    command: &clap::Command,
    page_name: &str,
    man_dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    // clap names are `&'static str` without its `string` feature, which the binaries do not
    // need; this one-shot tool leaks the few page names instead.
    let page_name: &'static str = Box::leak(page_name.to_owned().into_boxed_str());
    let page = command.clone().name(page_name);
    let path = man_dir.join(format!("{page_name}.1"));
    let mut buffer = Vec::new();
    clap_mangen::Man::new(page).render(&mut buffer)?;
    std::fs::write(&path, buffer)?;
    written.push(path);
    for subcommand in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
        let name = format!("{page_name}-{}", subcommand.get_name());
        write_man_page_tree(subcommand, &name, man_dir, written)?;
    }
    Ok(())
}
