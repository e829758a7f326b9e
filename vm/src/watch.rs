// SPDX-License-Identifier: MIT OR Apache-2.0
//! Waiting for source files to change (`enoki-reload --watch`): editors
//! write a file in several steps, so changes are gathered until the tree
//! has been quiet for a moment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};

/// How long the tree must stay quiet before a batch of changes counts.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Watches directories for changes to source files.
pub struct SourceWatch {
    _watcher: notify::RecommendedWatcher,
    events: Receiver<notify::Result<notify::Event>>,
}

impl SourceWatch {
    /// Starts watching every directory in `dirs`, recursively.
    pub fn new(dirs: &[PathBuf]) -> Result<Self> {
        let (tx, events) = channel();
        let mut watcher = notify::recommended_watcher(move |e| {
            // The receiver is gone only when the watch is over.
            let _ = tx.send(e);
        })
        .context("starting a file watcher")?;
        for dir in dirs {
            watcher
                .watch(dir, RecursiveMode::Recursive)
                .with_context(|| format!("watching {}", dir.display()))?;
        }
        Ok(SourceWatch {
            _watcher: watcher,
            events,
        })
    }

    /// The next batch of changed source files (`.rs`, `.toml`, `.c`,
    /// `.h`, build scripts), once the tree has been quiet for `settle`;
    /// `None` if nothing changed within `timeout` (`None`: wait forever).
    pub fn next_batch(
        &self,
        settle: Duration,
        timeout: Option<Duration>,
    ) -> Result<Option<BTreeSet<PathBuf>>> {
        let mut changed = BTreeSet::new();
        loop {
            let wait = if changed.is_empty() {
                timeout
            } else {
                Some(settle)
            };
            let event = match wait {
                Some(t) => self.events.recv_timeout(t),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(e) => {
                    let e = e.context("watching the sources")?;
                    if e.kind.is_access() {
                        continue;
                    }
                    changed.extend(e.paths.into_iter().filter(|p| is_source(p)));
                }
                Err(RecvTimeoutError::Timeout) if changed.is_empty() => return Ok(None),
                Err(RecvTimeoutError::Timeout) => return Ok(Some(changed)),
                Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the file watcher stopped"),
            }
        }
    }
}

/// Whether a change to `path` can change a module build.
fn is_source(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && !name.ends_with('~')
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "toml" | "c" | "h" | "sh")
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_is_one_batch_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let watch = SourceWatch::new(&[dir.path().to_path_buf()]).unwrap();
        let file = src.join("lib.rs");
        std::fs::write(&file, "fn a() {}\n").unwrap();
        std::fs::write(dir.path().join(".lib.rs.swp"), "x").unwrap();
        std::fs::write(&file, "fn b() {}\n").unwrap();
        let batch = watch
            .next_batch(SETTLE, Some(Duration::from_secs(10)))
            .unwrap()
            .expect("the edit was seen");
        let file = file.canonicalize().unwrap();
        let names: Vec<PathBuf> = batch.iter().map(|p| p.canonicalize().unwrap()).collect();
        assert_eq!(names, [file]);
    }

    #[test]
    fn a_quiet_tree_has_no_batch() {
        let dir = tempfile::tempdir().unwrap();
        let watch = SourceWatch::new(&[dir.path().to_path_buf()]).unwrap();
        assert!(watch
            .next_batch(SETTLE, Some(Duration::from_millis(200)))
            .unwrap()
            .is_none());
    }
}
