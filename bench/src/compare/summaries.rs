//! The summaries the daemon (`--benchmark`, on stdout) and mock-llm (on stderr)
//! print when they stop, read back as name → count.

use std::collections::BTreeMap;

/// The daemon's `--benchmark` summary: `name: count` lines (`peak concurrent
/// streams: 1000`). Lines that are not such pairs are skipped, so a daemon that
/// prints more (or another implementation's wording) costs nothing but the figure.
pub fn parse_daemon_summary(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(':')?;
            let value = value.trim().parse().ok()?;
            Some((name.trim().to_owned(), value))
        })
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

/// The daemon summary's name for the most streams open at once.
pub const DAEMON_PEAK_STREAMS: &str = "peak concurrent streams";

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
    }

    #[test]
    fn mock_llm_summary_is_read_from_its_last_line() {
        let stderr = "some warning\nmock-llm: connections 10, requests 1000, completed 998, cancelled 2, \
                      reset 0, peak streams 1000 (per connection 100)\n";
        let summary = parse_mock_llm_summary(stderr);
        assert_eq!(summary.get(MOCK_LLM_CONNECTIONS), Some(&10));
        assert_eq!(summary.get("completed"), Some(&998));
        assert_eq!(summary.get("peak streams"), Some(&1000));
        assert_eq!(summary.get("per connection"), Some(&100));
        assert_eq!(summary.len(), 7);
        assert!(parse_mock_llm_summary("mock-llm could not listen\n").is_empty());
    }
}
