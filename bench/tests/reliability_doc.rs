//! docs/RELIABILITY.md names the test behind each fault it lists; this keeps those
//! names true. In every table with a `test` column, each backticked name must be
//! a scenario in `scenario_tests!` (`module::name`) or a `#[test]` function in the
//! file it names (`path.rs::name`), and a row naming no test must say "not tested"
//! (or be one of the lead's placeholders). Scenarios the doc leaves out are fine.

use std::path::{Path, PathBuf};

/// The workspace root (bench/ is one level down).
fn root() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().map(Path::to_path_buf).unwrap_or_else(|| bench.to_path_buf())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The `module::name` entries of `scenario_tests!`'s list, read as text: the list
/// is what the binaries' test files run, so a name outside it never runs.
fn listed_scenarios(mod_rs: &str) -> Vec<String> {
    let Some((_, after)) = mod_rs.split_once("scenario_tests!(@each $binary;") else {
        panic!("no `scenario_tests!(@each $binary;` list in bench/src/scenarios/mod.rs");
    };
    after
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with(");"))
        .filter_map(|line| line.strip_suffix(','))
        .filter(|entry| is_scenario_name(entry))
        .map(str::to_owned)
        .collect()
}

fn is_identifier(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_lowercase())
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_scenario_name(text: &str) -> bool {
    text.split_once("::").is_some_and(|(module, name)| is_identifier(module) && is_identifier(name))
}

/// The cells of one table row; `\|` inside a cell is not a separator.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cell.push('|');
            }
            '|' => cells.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    cells.push(cell);
    cells.into_iter().map(|cell| cell.trim().to_owned()).collect()
}

fn is_separator(line: &str) -> bool {
    let line = line.trim();
    line.starts_with('|') && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// The text of every `...` span in `cell`.
fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Every test column cell of the doc: (line number, fault, cell).
fn test_cells(doc: &str) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut found = Vec::new();
    let mut column: Option<usize> = None;
    for (index, line) in lines.iter().enumerate() {
        if !line.trim_start().starts_with('|') {
            column = None;
            continue;
        }
        if is_separator(line) {
            continue;
        }
        let row = cells(line);
        let is_header = lines.get(index + 1).is_some_and(|next| is_separator(next));
        if is_header {
            column = row.iter().position(|cell| cell.eq_ignore_ascii_case("test"));
            continue;
        }
        if let Some(column) = column {
            let fault = row.first().cloned().unwrap_or_default();
            found.push((index + 1, fault, row.get(column).cloned().unwrap_or_default()));
        }
    }
    found
}

/// Whether `file` (workspace-relative) has `fn name(` marked `#[test]` within the
/// few lines above it (other attributes may sit between).
fn has_test_fn(root: &Path, file: &str, name: &str) -> Result<(), String> {
    let path = root.join(file);
    let source = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
    let lines: Vec<&str> = source.lines().collect();
    let signature = format!("fn {name}(");
    let Some(at) = lines.iter().position(|line| line.trim_start().starts_with(&signature)) else {
        return Err(format!("{file} has no `fn {name}`"));
    };
    let above = &lines[at.saturating_sub(3)..at];
    if above.iter().any(|line| line.trim() == "#[test]") {
        Ok(())
    } else {
        Err(format!("{file}: `fn {name}` is not a #[test]"))
    }
}

/// Everything wrong with `doc`'s test column, one line each.
fn problems(doc: &str, scenarios: &[String], root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (line, fault, cell) in test_cells(doc) {
        let names = backticked(&cell);
        let lower = cell.to_lowercase();
        if names.is_empty() && !lower.contains("not tested") && !lower.contains("placeholder") {
            problems.push(format!("line {line} ({fault}): names no test and does not say \"not tested\""));
        }
        for name in names {
            if is_scenario_name(name) {
                if !scenarios.iter().any(|listed| listed == name) {
                    problems.push(format!("line {line}: scenario `{name}` is not in scenario_tests!"));
                }
            } else if let Some((file, test)) = name.rsplit_once("::").filter(|(file, test)| {
                file.ends_with(".rs") && !file.starts_with('/') && !file.contains("..") && is_identifier(test)
            }) {
                if let Err(problem) = has_test_fn(root, file, test) {
                    problems.push(format!("line {line}: {problem}"));
                }
            } else {
                problems.push(format!(
                    "line {line}: `{name}` is neither a scenario (`module::name`) nor a unit test \
                     (`path/file.rs::name`)"
                ));
            }
        }
    }
    problems
}

fn scenarios() -> Vec<String> {
    let scenarios = listed_scenarios(&read(&root().join("bench/src/scenarios/mod.rs")));
    // Fewer means the list's layout changed and this parse no longer reads it.
    assert!(scenarios.len() >= 51, "read only {} scenarios from scenario_tests!", scenarios.len());
    scenarios
}

#[test]
fn every_test_the_reliability_doc_names_exists() {
    let doc = read(&root().join("docs/RELIABILITY.md"));
    let scenarios = scenarios();
    let cells = test_cells(&doc);
    let named =
        cells.iter().flat_map(|(_, _, cell)| backticked(cell)).filter(|n| is_scenario_name(n)).count();
    // Fewer means the tables stopped parsing (a renamed column, say), not that the
    // doc is honest.
    assert!(cells.len() >= 60 && named >= 40, "read {} rows naming {named} scenarios", cells.len());
    let problems = problems(&doc, &scenarios, &root());
    assert!(problems.is_empty(), "docs/RELIABILITY.md:\n{}", problems.join("\n"));
}

/// The checks themselves: each kind of wrong name in a small table is reported.
#[test]
fn misnamed_or_missing_tests_are_reported() {
    let scenarios = scenarios();
    let doc = "\
| fault | client sees | test |
|---|---|---|
| good | 400 | `handoffs::invalid_json_gets_400`, `core/src/admission.rs::at_capacity_refuses_counted_once` |
| misspelt scenario | 400 | `handoffs::invalid_json_gets_401` |
| missing file | - | `core/src/nowhere.rs::a_test` |
| helper, not a test | - | `core/src/stream/tests.rs::quiet_config` |
| no such fn | - | `core/src/admission.rs::no_such_test` |
| free text | - | `cargo test` |
| nothing named | - | checked by hand |
| honest | - | not tested |
| lead's row | - | placeholder (lead fills in) |

| other table | test column absent |
|---|---|
| x | `no::such_scenario` |
";
    let problems = problems(doc, &scenarios, &root());
    let expected = [
        "line 4: scenario `handoffs::invalid_json_gets_401`",
        "line 5: core/src/nowhere.rs:",
        "line 6: core/src/stream/tests.rs: `fn quiet_config` is not a #[test]",
        "line 7: core/src/admission.rs has no `fn no_such_test`",
        "line 8: `cargo test` is neither",
        "line 9 (nothing named): names no test",
    ];
    for (problem, expected) in problems.iter().zip(expected) {
        assert!(problem.starts_with(expected), "{problem:?} should start with {expected:?}");
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

#[test]
fn the_scenario_list_is_read_from_the_macro() {
    let scenarios = scenarios();
    for name in [
        "mock::mock_stream_is_head_eighteen_indexed_events_and_done",
        "limits::third_stream_over_max_connections_gets_503",
    ] {
        assert!(scenarios.iter().any(|listed| listed == name), "{name} in {scenarios:?}");
    }
    assert!(!scenarios.iter().any(|listed| listed.contains("$")), "only list entries: {scenarios:?}");
}
