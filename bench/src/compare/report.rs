//! `results.md`: per backend and concurrency level, one table with the daemons side
//! by side and the tokio/smol ratio of every figure.

use std::fmt::Write as _;

use super::launch::shell_quote;
use super::matrix::{BackendKind, DaemonCommand};
use super::results::{CellResult, Comparison};
use super::Workload;
use crate::load::{FailureClass, LatencySummary};

/// One numeric row of a table.
pub struct Figure {
    pub label: &'static str,
    /// Taken over the streams that completed (or got a byte, or over the events
    /// delivered): withheld for a failed cell, where those are the lucky few.
    pub completed_only: bool,
    pub decimals: usize,
    pub value: fn(&CellResult, &Workload) -> Option<f64>,
}

fn latency(summary: &LatencySummary, pick: fn(&LatencySummary) -> f64) -> Option<f64> {
    (summary.count > 0).then(|| pick(summary))
}

/// Every numeric figure, in table order.
pub const FIGURES: &[Figure] = &[
    Figure {
        label: "streams ok",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.load.as_ref().map(|l| l.ok as f64),
    },
    Figure {
        label: "streams failed",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.load.as_ref().map(|l| l.failed as f64),
    },
    Figure {
        label: "TTFB p50 (ms)",
        completed_only: true,
        decimals: 3,
        value: |r, _| r.load.as_ref().and_then(|l| latency(&l.first_byte, |s| s.p50_ms)),
    },
    Figure {
        label: "TTFB p99 (ms)",
        completed_only: true,
        decimals: 3,
        value: |r, _| r.load.as_ref().and_then(|l| latency(&l.first_byte, |s| s.p99_ms)),
    },
    Figure {
        label: "first event p50 (ms)",
        completed_only: true,
        decimals: 1,
        value: |r, _| r.load.as_ref().and_then(|l| latency(&l.first_event, |s| s.p50_ms)),
    },
    Figure {
        label: "first event p99 (ms)",
        completed_only: true,
        decimals: 1,
        value: |r, _| r.load.as_ref().and_then(|l| latency(&l.first_event, |s| s.p99_ms)),
    },
    Figure {
        label: "stream p50 (s)",
        completed_only: true,
        decimals: 3,
        value: |r, _| r.load.as_ref().and_then(|l| latency(&l.stream_duration, |s| s.p50_ms / 1000.0)),
    },
    Figure {
        label: "stream p99 (s)",
        completed_only: true,
        decimals: 3,
        value: |r, _| r.load.as_ref().and_then(|l| latency(&l.stream_duration, |s| s.p99_ms / 1000.0)),
    },
    Figure {
        label: "stream p50 ÷ backend",
        completed_only: true,
        decimals: 3,
        value: |r, w| {
            r.load
                .as_ref()
                .and_then(|l| latency(&l.stream_duration, |s| s.p50_ms / 1000.0))
                .map(|s| s / w.backend_secs())
        },
    },
    Figure {
        label: "stream p99 ÷ backend",
        completed_only: true,
        decimals: 3,
        value: |r, w| {
            r.load
                .as_ref()
                .and_then(|l| latency(&l.stream_duration, |s| s.p99_ms / 1000.0))
                .map(|s| s / w.backend_secs())
        },
    },
    Figure {
        label: "peak streams (client side)",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.load.as_ref().map(|l| l.peak_open_streams as f64),
    },
    Figure {
        label: "peak streams (daemon)",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.daemon_peak_streams().map(|n| n as f64),
    },
    Figure {
        label: "RSS before (MiB)",
        completed_only: false,
        decimals: 1,
        value: |r, _| r.daemon().map(|d| mib(d.rss_before_bytes)),
    },
    Figure {
        label: "RSS peak (MiB)",
        completed_only: false,
        decimals: 1,
        value: |r, _| r.daemon().map(|d| mib(d.rss_peak_bytes)),
    },
    Figure {
        label: "RSS growth per stream (KiB)",
        completed_only: true,
        decimals: 2,
        value: |r, _| r.daemon().and_then(|d| d.rss_per_peak_stream_bytes).map(|b| b / 1024.0),
    },
    Figure {
        label: "daemon CPU (s)",
        completed_only: false,
        decimals: 2,
        value: |r, _| r.daemon().map(|d| d.cpu_seconds),
    },
    Figure {
        label: "daemon CPU per event (µs)",
        completed_only: true,
        decimals: 2,
        value: |r, _| r.daemon().and_then(|d| d.cpu_us_per_event),
    },
    Figure {
        label: "daemon threads (peak)",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.daemon().map(|d| d.peak_threads as f64),
    },
    Figure {
        label: "daemon fds (peak)",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.daemon().map(|d| d.peak_fds as f64),
    },
    Figure {
        label: "backend TCP conns (peak open, sampled)",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.mock_llm.as_ref().and_then(|m| m.peak_connections).map(|n| n as f64),
    },
    Figure {
        label: "backend TCP conns (accepted)",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.backend_connections_accepted().map(|n| n as f64),
    },
    Figure {
        label: "backend requests per conn",
        completed_only: false,
        decimals: 1,
        value: |r, _| r.backend_requests_per_connection(),
    },
    Figure {
        label: "mock-llm CPU (s)",
        completed_only: false,
        decimals: 2,
        value: |r, _| r.mock_llm.as_ref().map(|m| m.cpu_seconds),
    },
    Figure {
        label: "mock-llm CPU (% of a core)",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.mock_llm.as_ref().map(|m| m.core_share * 100.0),
    },
    Figure {
        label: "generator CPU (s)",
        completed_only: false,
        decimals: 2,
        value: |r, _| r.load.as_ref().map(|l| l.generator.cpu_seconds),
    },
    Figure {
        label: "generator CPU (% of a core)",
        completed_only: false,
        decimals: 0,
        value: |r, _| {
            r.load
                .as_ref()
                .filter(|l| l.elapsed_secs > 0.0)
                .map(|l| l.generator.cpu_seconds / l.elapsed_secs * 100.0)
        },
    },
    Figure {
        label: "host CPU busy (% of all)",
        completed_only: false,
        decimals: 0,
        value: |r, _| r.host_cpu_busy.map(|b| b * 100.0),
    },
];

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Figure {
    /// This figure of `result` as the tables show it: `None` when there is none, or
    /// when the cell failed and the figure describes only its completed streams.
    pub fn shown(&self, result: &CellResult, workload: &Workload) -> Option<f64> {
        if self.completed_only && result.is_failed() {
            return None;
        }
        (self.value)(result, workload)
    }
}

/// The daemons whose ratio the tables show: tokio ÷ smol.
const RATIO: (&str, &str) = ("tokio", "smol");

/// The whole `results.md`.
pub fn markdown(comparison: &Comparison) -> String {
    let mut out = String::new();
    let w = &comparison.workload;
    let _ = writeln!(out, "# handoff-bench compare, {}\n", comparison.started);
    if comparison.interrupted {
        let _ = writeln!(out, "**Interrupted**: only the cells below ran.\n");
    }
    let _ = writeln!(
        out,
        "Workload: {} events per stream spaced {} ms (the backend's own duration: {:.2} s), arrivals over {} s, \
         handoff data `{}`, client {}, per-stream timeout {} s.  ",
        w.events,
        w.delay_ms,
        w.backend_secs(),
        w.ramp_secs,
        w.data,
        match w.client {
            crate::load::ClientKind::Tcp => "TCP",
            crate::load::ClientKind::Unix => "AF_UNIX socketpair",
        },
        w.timeout_secs
    );
    let host = &comparison.host;
    let _ = writeln!(
        out,
        "Host: {} CPUs, Linux {}, fd limit {}. Bottleneck flags at {:.0}% (of one core for mock-llm and the \
         generator, of all cores for the host).  ",
        host.cpus,
        host.kernel,
        host.fd_limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        comparison.saturation * 100.0
    );
    if !comparison.command_line.is_empty() {
        let line: Vec<String> = comparison.command_line.iter().map(|arg| shell_quote(arg)).collect();
        let _ = writeln!(out, "Command: `{}`  ", line.join(" "));
    }
    for spec in &comparison.daemons {
        let how = match &spec.command {
            DaemonCommand::Builtin { binary } => binary.display().to_string(),
            DaemonCommand::Template { command } => command.clone(),
        };
        let _ = writeln!(out, "Daemon {}: `{how}`  ", spec.name);
    }
    let _ = writeln!(
        out,
        "A cell is **failed** when more than {}% of its streams did not complete: its TTFB, stream, RSS-per-stream \
         and per-event figures (taken over the streams that did) are shown as — and left out of the charts.  ",
        comparison.failure_limit * 100.0
    );
    let ratio = has_ratio(comparison);
    if ratio {
        let _ = writeln!(
            out,
            "\nThe last column is {} ÷ {}: below 1 the {} figure is lower.",
            RATIO.0, RATIO.1, RATIO.0
        );
    }
    out.push('\n');
    for &backend in &comparison.backends {
        if !comparison.cells.iter().any(|r| r.cell.backend == backend) {
            continue;
        }
        let _ = writeln!(out, "## {backend}: {}\n", backend.description());
        for &streams in &comparison.streams {
            write_table(&mut out, comparison, backend, streams, ratio);
        }
    }
    out
}

fn has_ratio(comparison: &Comparison) -> bool {
    [RATIO.0, RATIO.1].iter().all(|name| comparison.daemons.iter().any(|spec| spec.name == *name))
}

fn write_table(out: &mut String, comparison: &Comparison, backend: BackendKind, streams: u64, ratio: bool) {
    let columns: Vec<(&str, Option<&CellResult>)> = comparison
        .daemons
        .iter()
        .map(|spec| (spec.name.as_str(), comparison.cell(&spec.name, backend, streams)))
        .collect();
    if columns.iter().all(|(_, result)| result.is_none()) {
        return;
    }
    let _ = writeln!(out, "### {backend}, {streams} streams\n");
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let _ = write!(out, "| figure | {} |", names.join(" | "));
    let mut rule = "|---|".to_owned() + &"--:|".repeat(names.len());
    if ratio {
        let _ = write!(out, " {} ÷ {} |", RATIO.0, RATIO.1);
        rule.push_str("--:|");
    }
    let _ = writeln!(out, "\n{rule}");
    let w = &comparison.workload;
    let ratio_of = |figure: &Figure| {
        let value = |name| {
            columns.iter().find(|(n, _)| *n == name).and_then(|(_, r)| *r).and_then(|r| figure.shown(r, w))
        };
        format_ratio(value(RATIO.0), value(RATIO.1))
    };
    let values: Vec<String> =
        columns.iter().map(|(_, result)| result.map_or("—".to_owned(), verdict)).collect();
    let _ = write!(out, "| verdict | {} |", values.join(" | "));
    if ratio {
        out.push_str("  |");
    }
    out.push('\n');
    for figure in FIGURES {
        let values: Vec<String> = columns
            .iter()
            .map(|(_, result)| match result.and_then(|r| figure.shown(r, w)) {
                Some(value) => format!("{value:.*}", figure.decimals),
                None => "—".to_owned(),
            })
            .collect();
        let _ = write!(out, "| {} | {} |", figure.label, values.join(" | "));
        if ratio {
            let _ = write!(out, " {} |", ratio_of(figure));
        }
        out.push('\n');
    }
    let text_rows: [(&str, TextFigure); 2] =
        [("failures by class", failure_classes), ("bottleneck flags", bottleneck_flags)];
    for (label, text) in text_rows {
        let values: Vec<String> =
            columns.iter().map(|(_, result)| result.map_or("—".to_owned(), text)).collect();
        let _ = write!(out, "| {label} | {} |", values.join(" | "));
        if ratio {
            out.push_str("  |");
        }
        out.push('\n');
    }
    out.push('\n');
    for (name, result) in &columns {
        let Some(result) = result else { continue };
        if let Some(error) = &result.error {
            let _ = writeln!(out, "- {name}: **error**: {}", cell_text(error));
        }
        for note in &result.notes {
            let _ = writeln!(out, "- {name}: {}", cell_text(note));
        }
    }
    out.push('\n');
}

/// A row of text (no ratio).
type TextFigure = fn(&CellResult) -> String;

fn format_ratio(numerator: Option<f64>, denominator: Option<f64>) -> String {
    match (numerator, denominator) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        (Some(a), Some(b)) if a == b => "=".to_owned(),
        _ => "—".to_owned(),
    }
}

/// `ok`, `ok (0.5% failed)`, `**failed** (98.0% incomplete)`, or `error`.
fn verdict(result: &CellResult) -> String {
    match result.verdict {
        Some(verdict) if verdict.failed => {
            format!("**failed** ({:.1}% incomplete)", verdict.incomplete_share * 100.0)
        }
        Some(verdict) if verdict.incomplete > 0 => {
            format!("ok ({:.2}% incomplete)", verdict.incomplete_share * 100.0)
        }
        Some(_) => "ok".to_owned(),
        None if result.error.is_some() => "error".to_owned(),
        None => "—".to_owned(),
    }
}

fn failure_classes(result: &CellResult) -> String {
    let Some(load) = &result.load else {
        return if result.error.is_some() { "error".to_owned() } else { "—".to_owned() };
    };
    const CLASSES: [(FailureClass, &str); 8] = [
        (FailureClass::Client, "client"),
        (FailureClass::Connect, "connect"),
        (FailureClass::Send, "send"),
        (FailureClass::Read, "read"),
        (FailureClass::Timeout, "timeout"),
        (FailureClass::Incomplete, "incomplete"),
        (FailureClass::Status, "status"),
        (FailureClass::Malformed, "malformed"),
    ];
    let mut parts: Vec<String> = CLASSES
        .iter()
        .filter(|(class, _)| load.failures.count(*class) > 0)
        .map(|(class, name)| format!("{name} {}", load.failures.count(*class)))
        .collect();
    parts.extend(load.status_codes.iter().map(|(code, count)| format!("HTTP {code}×{count}")));
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

fn bottleneck_flags(result: &CellResult) -> String {
    if result.load.is_none() {
        return "—".to_owned();
    }
    if result.flags.is_empty() {
        return "none".to_owned();
    }
    result.flags.iter().map(|flag| format!("**{flag}**")).collect::<Vec<_>>().join(", ")
}

/// Text safe inside a markdown table cell or list item.
fn cell_text(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The progress line printed after each cell.
pub fn one_line(result: &CellResult, workload: &Workload) -> String {
    let Some(load) = &result.load else {
        return format!("error: {}", result.error.as_deref().unwrap_or("no report"));
    };
    let mut line = format!("ok {}/{}", load.ok, load.settings.streams);
    if load.failed > 0 {
        let _ = write!(line, " ({})", failure_classes(result));
    }
    if let Some(verdict) = result.verdict.filter(|verdict| verdict.failed) {
        // The latency and per-event figures of the few that completed would flatter it.
        let _ = write!(
            line,
            ": FAILED ({:.1}% incomplete, more than {}%){}, flags: {}",
            verdict.incomplete_share * 100.0,
            verdict.limit * 100.0,
            backend_connections(result),
            bottleneck_flags(result).replace("**", "")
        );
        return line;
    }
    let _ = write!(line, ", TTFB p99 {:.2} ms", load.first_byte.p99_ms);
    if load.stream_duration.count > 0 {
        let _ = write!(
            line,
            ", stream p99 {:.2} s ({:.2}× backend)",
            load.stream_duration.p99_ms / 1000.0,
            load.stream_duration.p99_ms / 1000.0 / workload.backend_secs()
        );
    }
    if let Some(daemon) = &load.daemon {
        if let Some(per_stream) = daemon.rss_per_peak_stream_bytes {
            let _ = write!(line, ", RSS/stream {:.2} KiB", per_stream / 1024.0);
        }
        if let Some(per_event) = daemon.cpu_us_per_event {
            let _ = write!(line, ", {per_event:.2} µs/event");
        }
    }
    line.push_str(&backend_connections(result));
    let _ = write!(line, ", flags: {}", bottleneck_flags(result).replace("**", ""));
    line
}

/// `, backend conns 355 accepted (peak open 100)` for a cell with mock-llm.
fn backend_connections(result: &CellResult) -> String {
    let Some(mock) = &result.mock_llm else {
        return String::new();
    };
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    format!(
        ", backend conns {} accepted (peak open {})",
        count(result.backend_connections_accepted()),
        count(mock.peak_connections)
    )
}

#[cfg(test)]
mod tests {
    use super::super::Verdict;
    use super::*;

    #[test]
    fn ratios_need_both_values_and_a_divisor() {
        assert_eq!(format_ratio(Some(3.0), Some(2.0)), "1.50");
        assert_eq!(format_ratio(Some(0.0), Some(0.0)), "=");
        assert_eq!(format_ratio(Some(1.0), Some(0.0)), "—");
        assert_eq!(format_ratio(None, Some(2.0)), "—");
    }

    #[test]
    fn daemons_sit_side_by_side_with_the_ratio_of_every_figure() {
        let md = markdown(&super::super::testdata::comparison());
        assert!(md.contains("## mock: the daemon's built-in mock script"), "{md}");
        assert!(
            md.contains("### mock, 100 streams\n\n| figure | tokio | smol | peer | tokio ÷ smol |"),
            "{md}"
        );
        assert!(md.contains("| RSS growth per stream (KiB) | 1.50 | 3.00 | — | 0.50 |"), "{md}");
        assert!(md.contains("| daemon CPU per event (µs) | 2.00 | 4.00 | — | 0.50 |"), "{md}");
        assert!(md.contains("| TTFB p99 (ms) | 0.500 | 1.000 | — | 0.50 |"), "{md}");
        assert!(
            md.contains("| stream p99 ÷ backend | 0.078 | 0.078 | — | 1.00 |"),
            "990 ms over 18 × 705 ms: {md}"
        );
        assert!(md.contains("| peak streams (daemon) | 90 | — | 100 | — |"), "peer's capitalised key: {md}");
        assert!(
            md.contains("| failures by class | timeout 1 | timeout 1 | status 98, HTTP 503×98 |  |"),
            "{md}"
        );
        assert!(md.contains("| bottleneck flags | none | **host CPU 95%** | none |  |"), "{md}");
    }

    #[test]
    fn a_cell_that_failed_most_streams_is_marked_and_its_flattering_figures_withheld() {
        let md = markdown(&super::super::testdata::comparison());
        let mock = md.split("### mock, 100 streams").nth(1).expect("a mock table");
        assert!(
            md.contains("A cell is **failed** when more than 1% of its streams did not complete"),
            "{md}"
        );
        assert!(
            mock.contains("| verdict | ok (1.00% incomplete) | ok (1.00% incomplete) | **failed** (98.0% incomplete) |  |"),
            "{mock}"
        );
        // Beside the failure count, the counts stay; the 2 quick streams' figures go.
        assert!(mock.contains("| streams ok | 99 | 99 | 2 | 1.00 |"), "{mock}");
        assert!(mock.contains("| streams failed | 1 | 1 | 98 | 1.00 |"), "{mock}");
        assert!(mock.contains("| TTFB p99 (ms) | 0.500 | 1.000 | — |"), "{mock}");
        assert!(mock.contains("| daemon CPU per event (µs) | 2.00 | 4.00 | — |"), "{mock}");
        assert!(mock.contains("| daemon CPU (s) | 0.00 | 0.01 | 0.00 |"), "totals stay: {mock}");
    }

    #[test]
    fn a_ratio_against_a_failed_cell_is_withheld_but_counts_keep_theirs() {
        let mut comparison = super::super::testdata::comparison();
        let smol = comparison.cells.iter_mut().find(|r| r.cell.daemon == "smol").expect("a smol cell");
        smol.verdict = smol.verdict.map(|verdict| Verdict { failed: true, ..verdict });
        let md = markdown(&comparison);
        assert!(md.contains("| stream p99 ÷ backend | 0.078 | — | — | — |"), "{md}");
        assert!(md.contains("| daemon CPU per event (µs) | 2.00 | — | — | — |"), "{md}");
        assert!(md.contains("| streams ok | 99 | 99 | 2 | 1.00 |"), "{md}");
        assert!(md.contains("| daemon CPU (s) | 0.00 | 0.01 | 0.00 | 0.50 |"), "{md}");
    }

    #[test]
    fn the_progress_line_of_a_failed_cell_gives_no_latency_or_cost() {
        let comparison = super::super::testdata::comparison();
        let w = &comparison.workload;
        let peer = comparison.cell("peer", BackendKind::Mock, 100).expect("ran");
        let line = one_line(peer, w);
        assert_eq!(
            line,
            "ok 2/100 (status 98, HTTP 503×98): FAILED (98.0% incomplete, more than 1%), flags: none"
        );
        let tokio = one_line(comparison.cell("tokio", BackendKind::Http1, 100).expect("ran"), w);
        assert!(tokio.contains("µs/event") && tokio.contains("TTFB p99 0.70 ms"), "{tokio}");
        assert!(tokio.contains(", backend conns 100 accepted (peak open 88)"), "{tokio}");
    }

    #[test]
    fn a_failed_cell_shows_its_error_and_dashes() {
        let md = markdown(&super::super::testdata::comparison());
        let http1 = md.split("### http1, 100 streams").nth(1).expect("an http1 table");
        assert!(
            http1.contains("| verdict | ok (1.00% incomplete) | error | ok (1.00% incomplete) |  |"),
            "{http1}"
        );
        assert!(http1.contains("| backend TCP conns (peak open, sampled) | 88 | — | 100 | — |"), "{http1}");
        assert!(http1.contains("| backend TCP conns (accepted) | 100 | — | 355 | — |"), "{http1}");
        assert!(http1.contains("| backend requests per conn | 1.0 | — | 0.3 | — |"), "{http1}");
        assert!(http1.contains("| failures by class | timeout 1 | error | timeout 1 |  |"), "{http1}");
        assert!(http1.contains("- smol: **error**: the daemon exited at start (exit status: 1)"), "{http1}");
        assert!(http1.contains("- tokio: first error"), "notes appear: {http1}");
    }

    #[test]
    fn table_text_cannot_break_the_table() {
        assert_eq!(cell_text("a|b\nc"), "a\\|b c");
    }
}
