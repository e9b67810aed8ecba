//! Files re-read when they change: the resend flags file, the intake's bearer tokens and its TLS
//! certificate, key and client CA all go through this one polling mechanism.
//!
//! Polling rather than file-system notifications: it works the same on every file system
//! (including the symlink swaps Kubernetes uses for mounted secrets), and the interval bounds how
//! long a change takes to apply.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

/// What a look at the files found.
#[derive(Debug)]
pub(crate) enum FilesLook {
    /// The same contents as the last time they were read.
    Unchanged,
    /// New contents, one entry per path, in the order the paths were given.
    Changed(Vec<Vec<u8>>),
    /// A file could not be read. Reported once; until the files are readable again, later
    /// failures are `Unchanged`, so a missing file is not logged at every poll.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// A set of files read together, remembering what they held the last time.
#[derive(Debug)]
pub(crate) struct WatchedFiles {
    paths: Vec<PathBuf>,
    last_seen: Option<Vec<Vec<u8>>>,
    failing: bool,
}

impl WatchedFiles {
    /// Files not read yet: the first `look` reports them as changed.
    pub(crate) fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            last_seen: None,
            failing: false,
        }
    }

    /// Reads every file and says whether anything changed since the last look.
    pub(crate) async fn look(&mut self) -> FilesLook {
        let mut contents = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            match tokio::fs::read(path).await {
                Ok(content) => contents.push(content),
                Err(error) => {
                    if self.failing {
                        return FilesLook::Unchanged;
                    }
                    self.failing = true;
                    return FilesLook::Unreadable {
                        path: path.clone(),
                        error,
                    };
                }
            }
        }
        self.failing = false;
        if self.last_seen.as_ref() == Some(&contents) {
            return FilesLook::Unchanged;
        }
        self.last_seen = Some(contents.clone());
        FilesLook::Changed(contents)
    }

    /// Looks at the files every `poll` in the background and hands every change (or read
    /// failure) to `on_change`, until every receiver of `sender` is gone.
    pub(crate) fn keep_watching<T, F>(mut self, poll: Duration, sender: watch::Sender<T>, mut on_change: F)
    where
        T: Send + Sync + 'static,
        F: FnMut(FilesLook, &watch::Sender<T>) + Send + 'static,
    {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(poll);
            // The first tick is immediate; the caller has just read the files.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if sender.is_closed() {
                    return;
                }
                match self.look().await {
                    FilesLook::Unchanged => {}
                    look => on_change(look, &sender),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_reported_once_and_a_missing_file_once_until_it_is_back() {
        let directory = tempfile::tempdir().expect("tempdir");
        let first = directory.path().join("a");
        let second = directory.path().join("b");
        std::fs::write(&first, b"one").expect("write");
        std::fs::write(&second, b"two").expect("write");
        let mut files = WatchedFiles::new(vec![first.clone(), second.clone()]);
        assert!(
            matches!(files.look().await, FilesLook::Changed(contents) if contents == [b"one".to_vec(), b"two".to_vec()])
        );
        assert!(matches!(files.look().await, FilesLook::Unchanged));
        std::fs::remove_file(&second).expect("remove");
        assert!(matches!(files.look().await, FilesLook::Unreadable { path, .. } if path == second));
        assert!(matches!(files.look().await, FilesLook::Unchanged), "reported once");
        std::fs::write(&second, b"three").expect("write");
        assert!(matches!(files.look().await, FilesLook::Changed(contents) if contents[1] == b"three"));
    }
}
