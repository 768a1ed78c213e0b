//! The matrix: which daemons, backends and concurrency levels make the cells of a
//! comparison, and which cells a filter selects.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a daemon's streams get their tokens.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The daemon's built-in 18-event script (`-b mock -d DELAY`): no backend process.
    Mock,
    /// OpenAI over HTTP/2 + TLS (ALPN) to mock-llm, trusting its generated CA.
    H2tls,
    /// OpenAI over prior-knowledge cleartext HTTP/2 to mock-llm.
    H2c,
    /// OpenAI over HTTP/1.1 with keep-alive to mock-llm: one connection per stream.
    Http1,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] =
        [BackendKind::Mock, BackendKind::H2tls, BackendKind::H2c, BackendKind::Http1];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Mock => "mock",
            BackendKind::H2tls => "h2tls",
            BackendKind::H2c => "h2c",
            BackendKind::Http1 => "http1",
        }
    }

    /// One line for the results' headings.
    pub fn description(self) -> &'static str {
        match self {
            BackendKind::Mock => "the daemon's built-in mock script (no backend process)",
            BackendKind::H2tls => "OpenAI API over HTTP/2 + TLS to mock-llm",
            BackendKind::H2c => "OpenAI API over cleartext HTTP/2 (h2c) to mock-llm",
            BackendKind::Http1 => "OpenAI API over HTTP/1.1 keep-alive to mock-llm",
        }
    }

    /// Whether a mock-llm process serves this backend.
    pub fn is_mock_llm(self) -> bool {
        self != BackendKind::Mock
    }

    pub fn is_tls(self) -> bool {
        self == BackendKind::H2tls
    }

    pub fn is_http2(self) -> bool {
        matches!(self, BackendKind::H2tls | BackendKind::H2c)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a daemon under test is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonCommand {
    /// One of this workspace's daemons (`handoff-tokio`, `handoff-smol`): every flag of
    /// `handoff_io::cli::Cli` is known to work.
    Builtin { binary: PathBuf },
    /// Another implementation of the same contract: a command line with `{socket}` in
    /// it, run as `sh -c 'exec COMMAND'` (see [`super::launch`]).
    Template { command: String },
}

/// A daemon under test, by the name its column carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonSpec {
    pub name: String,
    pub command: DaemonCommand,
}

/// Why a daemon name cannot be used.
pub fn daemon_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Some("may only hold ASCII letters, digits, '-', '_' and '.' (it names files and columns)")
    } else {
        None
    }
}

/// One run: a daemon, a backend, a number of streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub daemon: String,
    pub backend: BackendKind,
    pub streams: u64,
}

impl Cell {
    /// `daemon/backend/streams`, what `--filter` patterns match.
    pub fn name(&self) -> String {
        format!("{}/{}/{}", self.daemon, self.backend, self.streams)
    }

    /// The stem of this cell's log files.
    pub fn file_stem(&self) -> String {
        format!("{}-{}-{}", self.daemon, self.backend, self.streams)
    }
}

/// Every cell, ordered backend, then streams, then daemon: the daemons of one
/// (backend, streams) pair run back to back, so slow drift of a shared machine
/// touches them alike.
pub fn cells(
    daemons: &[DaemonSpec],
    backends: &[BackendKind],
    streams: &[u64],
    filters: &[String],
) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &backend in backends {
        for &count in streams {
            for daemon in daemons {
                let cell = Cell { daemon: daemon.name.clone(), backend, streams: count };
                if filters.is_empty() || filters.iter().any(|pattern| matches_pattern(pattern, &cell.name()))
                {
                    cells.push(cell);
                }
            }
        }
    }
    cells
}

/// A filter pattern against a cell name: `/`-separated segments, each a literal or
/// `*`; a pattern with fewer segments than the name matches its leading segments
/// (`tokio` selects every tokio cell, `*/http1` every HTTP/1.1 cell).
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut names = name.split('/');
    pattern.split('/').all(|want| names.next().is_some_and(|have| want == "*" || want == have))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(name: &str) -> DaemonSpec {
        DaemonSpec {
            name: name.to_owned(),
            command: DaemonCommand::Template { command: "x {socket}".into() },
        }
    }

    #[test]
    fn daemons_of_one_backend_and_level_run_back_to_back() {
        let daemons = [daemon("tokio"), daemon("smol")];
        let names: Vec<String> = cells(&daemons, &[BackendKind::Mock, BackendKind::Http1], &[10, 20], &[])
            .iter()
            .map(Cell::name)
            .collect();
        assert_eq!(
            names,
            [
                "tokio/mock/10",
                "smol/mock/10",
                "tokio/mock/20",
                "smol/mock/20",
                "tokio/http1/10",
                "smol/http1/10",
                "tokio/http1/20",
                "smol/http1/20"
            ]
        );
    }

    #[test]
    fn filters_select_by_segment_with_wildcards_and_prefixes() {
        assert!(matches_pattern("tokio", "tokio/mock/1000"));
        assert!(matches_pattern("*/http1", "smol/http1/10000"));
        assert!(matches_pattern("*/*/1000", "smol/h2c/1000"));
        assert!(!matches_pattern("*/*/1000", "smol/h2c/10000"), "segments match whole, not as prefixes");
        assert!(!matches_pattern("tok", "tokio/mock/1000"));
        assert!(!matches_pattern("tokio/mock/1000/extra", "tokio/mock/1000"));
        let daemons = [daemon("tokio"), daemon("smol")];
        let filters = ["smol/h2c".to_owned(), "tokio/mock/20".to_owned()];
        let names: Vec<String> =
            cells(&daemons, &BackendKind::ALL, &[10, 20], &filters).iter().map(Cell::name).collect();
        assert_eq!(names, ["tokio/mock/20", "smol/h2c/10", "smol/h2c/20"]);
    }

    #[test]
    fn daemon_names_must_be_safe_in_file_names_and_patterns() {
        assert_eq!(daemon_name_problem("go-daemon_2.1"), None);
        assert!(daemon_name_problem("").is_some());
        assert!(daemon_name_problem("a/b").is_some(), "a slash would break filter patterns");
        assert!(daemon_name_problem("a b").is_some());
    }
}
