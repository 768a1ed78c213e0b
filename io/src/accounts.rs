//! User and group names for `--socket-owner` / `--socket-group`, resolved from
//! `/etc/passwd` and `/etc/group`. Reading the files (rather than asking NSS)
//! covers the accounts a service socket is given in practice, local system users
//! such as `www-data`, without a C library call or another crate; an account only
//! in LDAP can still be named by its numeric id.

use std::io;
use std::path::{Path, PathBuf};

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// Why an owner or group could not be resolved.
#[derive(Debug)]
pub enum AccountError {
    /// No such name in the database file.
    Unknown {
        /// "user" or "group".
        kind: &'static str,
        name: String,
        database: PathBuf,
    },
    /// The database file could not be read.
    Unreadable { database: PathBuf, error: io::Error },
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountError::Unknown { kind, name, database } => {
                write!(f, "no {kind} named {name:?} in {} (a numeric id is accepted too)", database.display())
            }
            AccountError::Unreadable { database, error } => {
                write!(f, "reading {}: {error}", database.display())
            }
        }
    }
}

impl std::error::Error for AccountError {}

/// The uid of `name` (a user name, or a numeric id taken as it is).
pub fn user_id(name: &str) -> Result<u32, AccountError> {
    resolve("user", name, Path::new(PASSWD))
}

/// The gid of `name` (a group name, or a numeric id taken as it is).
pub fn group_id(name: &str) -> Result<u32, AccountError> {
    resolve("group", name, Path::new(GROUP))
}

fn resolve(kind: &'static str, name: &str, database: &Path) -> Result<u32, AccountError> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = std::fs::read_to_string(database)
        .map_err(|error| AccountError::Unreadable { database: database.to_owned(), error })?;
    lookup(&text, name).ok_or_else(|| AccountError::Unknown {
        kind,
        name: name.to_owned(),
        database: database.to_owned(),
    })
}

/// The id of `name` in passwd- or group-format `text` (`name:x:id:...`).
fn lookup(text: &str, name: &str) -> Option<u32> {
    entries(text).find(|(entry, _)| *entry == name).map(|(_, id)| id)
}

/// `(name, id)` of every well-formed line; comments, blanks, NIS `+`/`-` lines
/// and lines with a non-numeric id are skipped.
fn entries(text: &str) -> impl Iterator<Item = (&str, u32)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        if name.is_empty() || name.starts_with(['#', '+', '-']) {
            return None;
        }
        let id = fields.nth(1)?.parse().ok()?;
        Some((name, id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment\n\
        \n\
        +nisuser::::::\n\
        broken:x:notanumber:1::/:/bin/false\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        handoff:x:998:997::/nonexistent:/usr/sbin/nologin\n";
    const GROUP_TEXT: &str = "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nhandoff:x:997:www-data\n";

    #[test]
    fn names_resolve_to_their_ids() {
        assert_eq!(lookup(PASSWD_TEXT, "root"), Some(0));
        assert_eq!(lookup(PASSWD_TEXT, "www-data"), Some(33));
        assert_eq!(lookup(PASSWD_TEXT, "handoff"), Some(998));
        assert_eq!(lookup(GROUP_TEXT, "www-data"), Some(33));
        assert_eq!(lookup(GROUP_TEXT, "handoff"), Some(997));
    }

    #[test]
    fn unknown_malformed_and_partial_names_do_not_resolve() {
        for name in ["nobody", "broken", "+nisuser", "www", "www-data2", "", "# a comment"] {
            assert_eq!(lookup(PASSWD_TEXT, name), None, "{name:?}");
        }
    }

    #[test]
    fn numeric_ids_are_taken_as_they_are() {
        let missing = Path::new("/nonexistent/passwd");
        assert_eq!(resolve("user", "4242", missing).unwrap(), 4242);
        let error = resolve("user", "www-data", missing).unwrap_err();
        assert!(matches!(error, AccountError::Unreadable { .. }), "{error}");
        assert!(error.to_string().contains("/nonexistent/passwd"), "{error}");
    }

    #[test]
    fn an_unknown_name_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("handoff-accounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let group = dir.join("group");
        std::fs::write(&group, GROUP_TEXT).unwrap();
        assert_eq!(resolve("group", "www-data", &group).unwrap(), 33);
        let message = resolve("group", "www-dta", &group).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(message.contains("no group named \"www-dta\""), "{message}");
        assert!(message.contains(&group.display().to_string()), "{message}");
    }
}
