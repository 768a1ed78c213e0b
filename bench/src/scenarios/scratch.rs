//! A private temporary directory per scenario, removed when the scenario ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Unix socket paths must fit in `sun_path` (108 bytes); a long `TMPDIR` is not used.
const MAX_BASE_LEN: usize = 64;

static NEXT: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates `$TMPDIR/hs-<pid>-<n>` (or under `/tmp` when `$TMPDIR` is long).
    pub fn new() -> Scratch {
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > MAX_BASE_LEN { PathBuf::from("/tmp") } else { base };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("hs-{}-{n}", std::process::id()));
        // A directory left by an earlier process with the same pid is ours to reuse.
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(error) = std::fs::create_dir_all(&dir) {
            panic!("creating the scenario directory {}: {error}", dir.display());
        }
        Scratch { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the directory (nothing is created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `contents` to a file in the directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path(name);
        if let Err(error) = std::fs::write(&path, contents) {
            panic!("writing {}: {error}", path.display());
        }
        path
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
