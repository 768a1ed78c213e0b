//! Reading a handoff's files beneath `--data-dir`, as core's
//! [`attachments::Plan`] says, and deleting them when core says they were used.
//!
//! Every open is `openat2` relative to the directory's fd with `RESOLVE_BENEATH`
//! and `RESOLVE_NO_SYMLINKS`: the kernel refuses `..` past the directory and any
//! symlink on the path, as the file system is at the moment of the open; no string
//! check could see that. Files are read on the worker thread: they are local,
//! bounded by the plan's limits, and read once per handoff, not per event.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use handoff_core::attachments::{self, AttachmentConfig, FileFailure, FileToRead, Plan};
use handoff_core::handoff::{Handoff, HandoffError};
use rustix::fs::{self as fs, AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// The kernel's rules for every path under the data directory.
const RESOLVE: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

/// The attachment settings, with `--data-dir` opened once. The directory's fd is
/// shared by the streams that will delete their files, not duplicated per stream.
#[derive(Default)]
pub struct Attachments {
    config: AttachmentConfig,
    dir: Option<Arc<OwnedFd>>,
}

impl Attachments {
    /// Opens the directory when one is configured. Fails when it cannot be opened
    /// or the kernel has no `openat2` (Linux before 5.6), since files could then
    /// not be opened safely.
    pub fn open(config: &AttachmentConfig) -> io::Result<Attachments> {
        let Some(path) = &config.data_dir else {
            return Ok(Attachments { config: config.clone(), dir: None });
        };
        let dir = fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| with_context(e.into(), "opening --data-dir", path))?;
        fs::openat2(&dir, ".", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), RESOLVE)
            .map_err(|e| match e {
                rustix::io::Errno::NOSYS => io::Error::new(
                    io::ErrorKind::Unsupported,
                    "--data-dir needs openat2 (Linux 5.6 or later)",
                ),
                e => with_context(e.into(), "checking --data-dir with openat2", path),
            })?;
        Ok(Attachments { config: config.clone(), dir: Some(Arc::new(dir)) })
    }
}

/// The files of one stream to delete after it, when core allows it.
#[derive(Debug)]
pub struct UsedFiles {
    dir: Arc<OwnedFd>,
    files: Vec<ReadFile>,
}

/// A file as it was read: its path, and what identifies it, so that a file put in
/// its place since is never the one deleted (an inode number alone can be reused
/// at once, hence the size and change time too).
#[derive(Debug)]
struct ReadFile {
    path: String,
    identity: Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: i64,
    ctime: (i64, i64),
}

impl Identity {
    fn of(stat: &fs::Stat) -> Identity {
        Identity {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size,
            ctime: (stat.st_ctime, stat.st_ctime_nsec as i64),
        }
    }
}

/// Reads what the handoff's attachments need and puts it into its messages.
/// `Ok(Some)` holds the files to delete later (only with `--delete-attachments`).
pub fn load(attachments: &Attachments, handoff: &mut Handoff) -> Result<Option<UsedFiles>, HandoffError> {
    // Core's plan refuses files when no directory is configured.
    let Some(plan) = Plan::new(handoff, &attachments.config)? else { return Ok(None) };
    let mut contents = Vec::new();
    let mut read = Vec::new();
    let mut taken = 0;
    if let Some(dir) = &attachments.dir {
        for file in plan.files() {
            let (bytes, identity) =
                read_file(dir, file, plan.read_limit(taken)).map_err(|failure| plan.failed(file, failure))?;
            taken += bytes.len() as u64;
            contents.push(bytes);
            read.push(ReadFile { path: file.path.to_owned(), identity });
        }
    }
    plan.apply(handoff, contents)?;
    match &attachments.dir {
        Some(dir) if attachments.config.delete_after_use && !read.is_empty() => {
            Ok(Some(UsedFiles { dir: Arc::clone(dir), files: read }))
        }
        _ => Ok(None),
    }
}

fn read_file(dir: &OwnedFd, file: FileToRead<'_>, limit: u64) -> Result<(Vec<u8>, Identity), FileFailure> {
    // NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = fs::openat2(dir, file.path, flags, Mode::empty(), RESOLVE).map_err(open_failure)?;
    let stat = fs::fstat(&fd).map_err(|_| FileFailure::Unreadable)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(FileFailure::NotRegularFile);
    }
    if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > limit {
        return Err(FileFailure::TooLarge);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(stat.st_size).unwrap_or(0));
    // One byte past the limit tells a file that grew since the fstat.
    File::from(fd)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|_| FileFailure::Unreadable)?;
    if bytes.len() as u64 > limit {
        return Err(FileFailure::TooLarge);
    }
    Ok((bytes, Identity::of(&stat)))
}

fn open_failure(errno: rustix::io::Errno) -> FileFailure {
    use rustix::io::Errno;
    match errno {
        Errno::NOENT | Errno::NOTDIR => FileFailure::NotFound,
        Errno::XDEV => FileFailure::OutsideDataDir,
        Errno::LOOP => FileFailure::Symlink,
        Errno::ACCESS | Errno::PERM => FileFailure::PermissionDenied,
        Errno::ISDIR | Errno::NXIO => FileFailure::NotRegularFile,
        _ => FileFailure::Unreadable,
    }
}

impl UsedFiles {
    /// Deletes the files when core says the stream's backend took them. Each is
    /// unlinked from its directory, opened beneath the data directory again, and
    /// only while it is still the file that was read.
    pub fn finish(self, summary: &handoff_core::metrics::StreamSummary) {
        if !attachments::delete_after(summary) {
            return;
        }
        for file in &self.files {
            if let Err(error) = self.delete(file) {
                tracing::warn!(path = %file.path, %error, "deleting a used attachment failed");
            }
        }
    }

    fn delete(&self, file: &ReadFile) -> io::Result<()> {
        let (parent, name) = match file.path.rsplit_once('/') {
            Some((parent, name)) => (if parent.is_empty() { "." } else { parent }, name),
            None => (".", file.path.as_str()),
        };
        let parent = fs::openat2(
            &self.dir,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?;
        let stat = fs::statat(parent.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)?;
        if Identity::of(&stat) != file.identity {
            return Err(io::Error::other("the file was replaced since it was read; kept"));
        }
        fs::unlinkat(parent.as_fd(), name, AtFlags::empty())?;
        Ok(())
    }
}

fn with_context(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests;
