//! The summaries the daemon (`--benchmark`, on stdout) and mock-llm (on stderr)
//! print when they stop, read back as name → count.
//!
//! Our daemons print `peak concurrent streams: 1000`; other implementations of the
//! contract print their own wording (`Peak concurrent streams: 1000`,
//! `peak_streams=1000 completed=998`, a log line with a timestamp in front, JSON), so
//! the reader takes any `name: count` or `name=count` pair and the peak is looked up
//! by what its name says, not by its exact spelling.

use std::collections::BTreeMap;

/// Every `name: count` and `name=count` pair of a daemon's summary, names as
/// written. A line may hold several (`peak=10 completed=9`); a later pair of the
/// same name replaces an earlier one, so a final summary outranks periodic ones.
/// Counts may group thousands (`10,000`, `10_000`); a value that is not a whole
/// count (`1.5`, `12ms`, `50%`) is skipped, as is anything else, so a daemon that
/// prints more costs nothing but the figure.
pub fn parse_daemon_summary(text: &str) -> BTreeMap<String, u64> {
    text.lines().flat_map(line_pairs).collect()
}

/// The pairs of one line: each `:` or `=` followed by a count ends a pair whose name
/// runs back to the previous pair's end, or the line's start.
fn line_pairs(line: &str) -> Vec<(String, u64)> {
    let mut pairs = Vec::new();
    let mut name_start = 0;
    let mut search = 0;
    while let Some(offset) = line[search..].find([':', '=']) {
        let separator = search + offset;
        search = separator + 1;
        let Some((value, value_end)) = count_at(line, separator + 1) else {
            continue;
        };
        if let Some(name) = pair_name(&line[name_start..separator]) {
            pairs.push((name.to_owned(), value));
        }
        name_start = value_end;
        search = value_end;
    }
    pairs
}

/// The name before a separator: after any earlier `:` or `=` (`stats: peak=3` names
/// `peak`), without quotes, commas or braces; it must hold a letter.
fn pair_name(text: &str) -> Option<&str> {
    let text = text.rsplit([':', '=']).next().unwrap_or(text);
    let name =
        text.trim_matches(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '{' | '|'));
    name.chars().any(char::is_alphabetic).then_some(name)
}

/// A count starting at `start` (after spaces and an opening quote): digits, in
/// groups of three after `,` or `_` if grouped, ending at the line's end, a space or
/// punctuation that cannot continue a number. Returns it and where it ends.
fn count_at(line: &str, start: usize) -> Option<(u64, usize)> {
    let bytes = line.as_bytes();
    let mut i = start;
    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
        i += 1;
    }
    let digits_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    let mut digits = line[digits_start..i].to_owned();
    // `10,000` but not `1,2` or the `, ` between two pairs.
    while matches!(bytes.get(i), Some(b',' | b'_'))
        && bytes.get(i + 1..i + 4).is_some_and(|group| group.iter().all(u8::is_ascii_digit))
        && !bytes.get(i + 4).is_some_and(u8::is_ascii_digit)
    {
        digits.push_str(&line[i + 1..i + 4]);
        i += 4;
    }
    if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
        i += 1;
    }
    let ends_here = match bytes.get(i) {
        None => true,
        Some(b' ' | b'\t' | b',' | b';' | b')' | b'}' | b']' | b'|' | b'\r') => true,
        // A full stop ends a sentence, not a decimal.
        Some(b'.') => !bytes.get(i + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => false,
    };
    if !ends_here {
        return None;
    }
    Some((digits.parse().ok()?, i))
}

/// The summary's name for the most streams open at once, as our daemons write it.
pub const DAEMON_PEAK_STREAMS: &str = "peak concurrent streams";

/// The daemon's own count of the most streams it had open at once, whatever the
/// spelling: a name that says *peak* (or *high water*) and *streams*,
/// *concurrent*/*concurrency*, *active* or *open*, but nothing about the backend,
/// connections, memory or a per-something share (`Peak concurrent streams`,
/// `peak_streams`, `peakActiveStreams`, `streams (peak)`). Our own spelling wins if
/// present; otherwise the first match in name order.
pub fn daemon_peak_streams(summary: &BTreeMap<String, u64>) -> Option<u64> {
    if let Some(value) = summary.get(DAEMON_PEAK_STREAMS) {
        return Some(*value);
    }
    let matches: Vec<(Vec<String>, u64)> = summary
        .iter()
        .map(|(name, value)| (normalized_words(name), *value))
        .filter(|(words, _)| names_peak_streams(words))
        .collect();
    // A name that says streams outranks one that only says concurrency.
    let says_streams = |words: &[String]| words.iter().any(|word| word == "streams" || word == "stream");
    matches.iter().find(|(words, _)| says_streams(words)).or(matches.first()).map(|(_, value)| *value)
}

fn names_peak_streams(words: &[String]) -> bool {
    let has = |wanted: &[&str]| words.iter().any(|word| wanted.contains(&word.as_str()));
    let peak = has(&["peak", "highwater", "hwm"])
        || words.windows(2).any(|pair| pair[0] == "high" && pair[1] == "water");
    let streams = has(&["streams", "stream", "concurrent", "concurrency", "active", "open"]);
    let elsewhere = has(&[
        "backend",
        "upstream",
        "connection",
        "connections",
        "conns",
        "per",
        "rss",
        "memory",
        "bytes",
        "fds",
        "threads",
        "limit",
    ]);
    peak && streams && !elsewhere
}

/// Lowercase words of a name: `peakConcurrent_streams (x)` → peak, concurrent,
/// streams, x.
fn normalized_words(name: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(name.len() + 8);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_uppercase() && previous_lower {
            spaced.push(' ');
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        if c.is_alphanumeric() {
            spaced.extend(c.to_lowercase());
        } else {
            spaced.push(' ');
        }
    }
    spaced.split_whitespace().map(str::to_owned).collect()
}

/// The last `mock-llm: connections 3, requests 5, …, peak streams 5 (per connection
/// 2)` line of mock-llm's stderr, as `connections` → 3, `per connection` → 2, ….
pub fn parse_mock_llm_summary(stderr: &str) -> BTreeMap<String, u64> {
    let Some(line) = stderr.lines().rev().find_map(|line| line.strip_prefix("mock-llm: connections ")) else {
        return BTreeMap::new();
    };
    let line = format!("connections {line}");
    line.split([',', '(', ')'])
        .filter_map(|part| {
            let (name, value) = part.trim().rsplit_once(' ')?;
            Some((name.trim().to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// mock-llm's name for the connections it accepted.
pub const MOCK_LLM_CONNECTIONS: &str = "connections";

/// mock-llm's name for the requests (streams) it received.
pub const MOCK_LLM_REQUESTS: &str = "requests";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_summary_pairs_are_read_and_other_lines_skipped() {
        let text =
            "peak concurrent streams: 1000\nstarted: 1000\nrejected (503): 2\nnoise\nbytes sent: 123456\n";
        let summary = parse_daemon_summary(text);
        assert_eq!(summary.get(DAEMON_PEAK_STREAMS), Some(&1000));
        assert_eq!(summary.get("rejected (503)"), Some(&2));
        assert_eq!(summary.get("bytes sent"), Some(&123456));
        assert_eq!(summary.len(), 4);
        assert_eq!(daemon_peak_streams(&summary), Some(1000));
    }

    /// Our own daemons' summary, exactly as `handoff_core::limits::summary` writes it.
    #[test]
    fn our_summary_is_read_whole() {
        let text = "peak concurrent streams: 41\nstarted: 42\ncompleted: 37\nfailed: 2\nclient gone: 1\n\
                    client stalled: 4\nrejected (503): 5\nrejected while draining (503): 2\n\
                    bad handoffs (400): 6\nbytes sent: 123456\n";
        let summary = parse_daemon_summary(text);
        assert_eq!(summary.len(), 10, "{summary:?}");
        assert_eq!(summary.get("rejected while draining (503)"), Some(&2));
        assert_eq!(daemon_peak_streams(&summary), Some(41));
    }

    /// Summaries as sibling daemons print them: a Go daemon logging through `log`
    /// (timestamp first), a PHP daemon's `key=value` stats line, a JSON summary,
    /// capitalised prose with grouped thousands.
    #[test]
    fn other_daemons_wordings_give_the_peak() {
        let cases: [(&str, u64); 9] = [
            ("Peak concurrent streams: 9876\nCompleted: 9870\nFailed: 6\n", 9876),
            ("2025/01/07 10:31:02 Peak concurrent streams: 355\n", 355),
            ("[2025-01-07T10:31:02+00:00] INFO stats: peak_streams=1000 completed=998 failed=2\n", 1000),
            ("{\n  \"peak_concurrent_streams\": 10000,\n  \"completed\": 10000\n}\n", 10000),
            ("PEAK CONCURRENT STREAMS = 10,000\n", 10000),
            ("peakActiveStreams=512 totalStreams=600\n", 512),
            ("streams (peak): 77\nstreams (total): 80\n", 77),
            ("Peak concurrency: 18000 streams\n", 18000),
            ("Shutting down. Peak concurrent streams: 42.\n", 42),
        ];
        for (text, peak) in cases {
            let summary = parse_daemon_summary(text);
            assert_eq!(daemon_peak_streams(&summary), Some(peak), "{text:?} read as {summary:?}");
        }
        let logfmt = parse_daemon_summary("stats: peak_streams=1000 completed=998 failed=2");
        assert_eq!(
            logfmt,
            BTreeMap::from([
                ("peak_streams".to_owned(), 1000),
                ("completed".to_owned(), 998),
                ("failed".to_owned(), 2)
            ])
        );
    }

    #[test]
    fn backend_limits_and_other_peaks_are_not_the_stream_peak() {
        let text = "peak backend connections: 100\npeak RSS bytes: 1048576\nmax concurrent streams: 100\n\
                    peak streams per connection: 100\nuptime: 12.5s\ncpu: 50%\n";
        let summary = parse_daemon_summary(text);
        assert_eq!(daemon_peak_streams(&summary), None, "{summary:?}");
        assert_eq!(summary.get("uptime"), None, "not a whole count");
        assert_eq!(summary.get("cpu"), None);
        assert_eq!(summary.get("peak backend connections"), Some(&100));

        let both = parse_daemon_summary("Peak concurrency: 9\nPeak concurrent streams: 10\n");
        assert_eq!(daemon_peak_streams(&both), Some(10), "a name saying streams wins");
    }

    #[test]
    fn counts_end_where_numbers_cannot_go_on() {
        assert_eq!(count_at("x: 12,345, y", 2), Some((12345, 9)));
        assert_eq!(count_at("x: 1,2", 2), Some((1, 4)));
        assert_eq!(count_at("x: 1_000_000", 2), Some((1_000_000, 12)));
        assert_eq!(count_at("x: 12:00", 2), None, "a clock, not a count");
        assert_eq!(count_at("x: 12ms", 2), None);
        assert_eq!(count_at("x: \"7\"", 2), Some((7, 6)));
        assert_eq!(count_at("x: 99999999999999999999999", 2), None, "too big for a count");
        assert_eq!(count_at("x:", 2), None);
    }

    #[test]
    fn mock_llm_summary_is_read_from_its_last_line() {
        let stderr = "some warning\nmock-llm: connections 10, requests 1000, completed 998, cancelled 2, \
                      reset 0, peak streams 1000 (per connection 100)\n";
        let summary = parse_mock_llm_summary(stderr);
        assert_eq!(summary.get(MOCK_LLM_CONNECTIONS), Some(&10));
        assert_eq!(summary.get(MOCK_LLM_REQUESTS), Some(&1000));
        assert_eq!(summary.get("completed"), Some(&998));
        assert_eq!(summary.get("peak streams"), Some(&1000));
        assert_eq!(summary.get("per connection"), Some(&100));
        assert_eq!(summary.len(), 7);
        assert!(parse_mock_llm_summary("mock-llm could not listen\n").is_empty());
    }
}
