//! `rebound-example-directory-sink`: rebound's consumer with the directory sink of this example
//! instead of a built-in one. Every flag of `rebound-consumer` works (`--sink` only names the
//! sink in the logs), plus `--notes-dir`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;
use rebound_consumer::{ConsumerArgs, ConsumerError};
use rebound_example_directory_sink::DirectorySink;

/// The consumer's flags and the sink's own.
#[derive(Debug, clap::Parser)]
#[command(
    name = "rebound-example-directory-sink",
    version,
    about = "rebound's consumer writing each note to a JSON file."
)]
struct Args {
    /// Every flag of rebound-consumer.
    #[command(flatten)]
    consumer: ConsumerArgs,

    /// The directory that receives one `<note_id>.json` file per note.
    #[arg(long, env = "REBOUND_NOTES_DIR", default_value = "notes")]
    notes_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let common = args.consumer.common.clone();
    let notes_dir = args.notes_dir;
    rebound_service::service_main(
        "rebound-example-directory-sink",
        &common,
        || args.consumer.into_config(),
        |config, shutdown| async move {
            let sink = DirectorySink::open(&notes_dir).map_err(|error| ConsumerError::OpenSink {
                sink: notes_dir.display().to_string(),
                reason: error.to_string(),
            })?;
            rebound_consumer::run_with_sink(config, Box::new(sink), shutdown).await
        },
        |_| false,
    )
    .await
}
