//! `OutputFormat`: the one `--output text|json` value of every command that prints a result
//! (`rebound topics`, `rebound dlq`, `rebound-producer send`), so the flag reads the same
//! everywhere.

/// How a command prints its result on stdout (logs and errors stay on stderr either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    #[default]
    #[value(alias = "table")]
    Text,
    /// JSON for scripts: one object (or one per line where a command streams).
    Json,
}
