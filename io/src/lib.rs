//! Placeholder; filled by the daemon issue.
