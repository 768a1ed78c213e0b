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

use handoff_core::attachments::{self, AttachmentConfig, FileFailure, FileToRead, Plan};
use handoff_core::handoff::{Handoff, HandoffError};
use rustix::fs::{self as fs, AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// The kernel's rules for every path under the data directory.
const RESOLVE: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

/// `--data-dir`, opened once.
pub struct DataDir {
    dir: OwnedFd,
    config: AttachmentConfig,
}

impl DataDir {
    /// Opens the directory when one is configured. Fails when it cannot be opened
    /// or the kernel has no `openat2` (Linux before 5.6), since files could then
    /// not be opened safely.
    pub fn open(config: &AttachmentConfig) -> io::Result<Option<DataDir>> {
        let Some(path) = &config.data_dir else { return Ok(None) };
        let dir = fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| with_context(e.into(), "opening --data-dir", path))?;
        fs::openat2(&dir, ".", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), RESOLVE)
            .map_err(|e| {
                let error: io::Error = e.into();
                if error.raw_os_error() == Some(libc_enosys()) {
                    io::Error::new(
                        io::ErrorKind::Unsupported,
                        "--data-dir needs openat2 (Linux 5.6 or later)",
                    )
                } else {
                    with_context(error, "checking --data-dir with openat2", path)
                }
            })?;
        Ok(Some(DataDir { dir, config: config.clone() }))
    }
}

/// The files of one stream to delete after it, when core allows it.
#[derive(Debug)]
pub struct UsedFiles {
    dir: OwnedFd,
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
pub fn load(data_dir: Option<&DataDir>, handoff: &mut Handoff) -> Result<Option<UsedFiles>, HandoffError> {
    let default_config = AttachmentConfig::default();
    let config = data_dir.map_or(&default_config, |dir| &dir.config);
    let Some(plan) = Plan::new(handoff, config)? else { return Ok(None) };
    let mut contents = Vec::new();
    let mut read = Vec::new();
    let mut taken = 0;
    if let Some(data_dir) = data_dir {
        for file in plan.files() {
            let (bytes, identity) = read_file(&data_dir.dir, file, plan.read_limit(taken))
                .map_err(|failure| plan.failed(file, failure))?;
            taken += bytes.len() as u64;
            contents.push(bytes);
            read.push(ReadFile { path: file.path.to_owned(), identity });
        }
    }
    plan.apply(handoff, contents)?;
    let Some(data_dir) = data_dir.filter(|dir| dir.config.delete_after_use && !read.is_empty()) else {
        return Ok(None);
    };
    match data_dir.dir.try_clone() {
        Ok(dir) => Ok(Some(UsedFiles { dir, files: read })),
        Err(error) => {
            tracing::warn!(%error, "keeping a handoff's files: no fd to delete them with");
            Ok(None)
        }
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

fn libc_enosys() -> i32 {
    rustix::io::Errno::NOSYS.raw_os_error()
}

#[cfg(test)]
mod tests;
