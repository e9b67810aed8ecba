//! `rebound-xtask`: development tasks. `rebound-xtask shell-docs [OUT]` writes the man pages and
//! shell completions of the four binaries (default `target/shell-docs`); see `scripts/man.sh`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("shell-docs") => {
            let out = args
                .next()
                .map_or_else(|| PathBuf::from("target/shell-docs"), PathBuf::from);
            match rebound_xtask::write_shell_docs(&out) {
                Ok(written) => {
                    println!("wrote {} files under {}", written.len(), out.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: writing the shell docs under {} failed: {error}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: rebound-xtask shell-docs [OUT]   (man pages and shell completions)");
            ExitCode::from(2)
        }
    }
}
