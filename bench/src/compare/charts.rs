//! The comparison's charts as SVG: the TTFB distribution per cell (log scale), and
//! bars of RSS growth per stream and CPU per event.

use super::matrix::BackendKind;
use super::results::{CellResult, Comparison};
use super::svg::{Anchor, Svg};

/// One colour per daemon, in column order.
const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const GRID: &str = "#ddd";
const AXIS: &str = "#444";

fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// The (backend, streams) pairs that have at least one cell with a load report.
fn panels(comparison: &Comparison) -> Vec<(BackendKind, u64)> {
    let mut panels = Vec::new();
    for &backend in &comparison.backends {
        for &streams in &comparison.streams {
            let has_data = comparison.daemons.iter().any(|spec| {
                comparison.cell(&spec.name, backend, streams).is_some_and(|result| result.load.is_some())
            });
            if has_data {
                panels.push((backend, streams));
            }
        }
    }
    panels
}

fn legend(svg: &mut Svg, comparison: &Comparison, x: f64, y: f64) {
    let mut x = x;
    for (i, spec) in comparison.daemons.iter().enumerate() {
        svg.rect(x, y - 10.0, 12.0, 12.0, colour(i));
        svg.text((x + 16.0, y), &spec.name, 12.0, Anchor::Start);
        x += 24.0 + 8.0 * spec.name.len() as f64;
    }
}

fn no_data(title: &str) -> String {
    let mut svg = Svg::new(480.0, 80.0);
    svg.text((240.0, 30.0), title, 15.0, Anchor::Middle);
    svg.text((240.0, 60.0), "no cell has results yet", 12.0, Anchor::Middle);
    svg.finish()
}

/// The TTFB percentiles that make a distribution line.
const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// A failed cell draws none: its TTFB is that of the few streams that completed
/// (or of quick error responses).
fn ttfb_points(result: &CellResult) -> Option<[f64; 5]> {
    if result.is_failed() {
        return None;
    }
    let summary = result.load.as_ref().map(|load| load.first_byte).filter(|summary| summary.count > 0)?;
    Some([summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.p999_ms, summary.max_ms])
}

/// Small multiples, one panel per (backend, streams): TTFB p50 … max per daemon,
/// milliseconds on one log scale shared by every panel.
pub fn ttfb(comparison: &Comparison) -> String {
    const TITLE: &str = "Time to first byte: p50, p90, p99, p99.9, max (ms, log scale)";
    let panels = panels(comparison);
    let values: Vec<f64> =
        comparison.cells.iter().filter_map(ttfb_points).flatten().filter(|v| *v > 0.0).collect();
    if panels.is_empty() || values.is_empty() {
        return no_data(TITLE);
    }
    let scale = LogScale::covering(&values);

    // A row per backend when there are several levels; otherwise side by side.
    let levels = comparison.streams.len();
    let columns = if levels > 1 { levels.min(4) } else { panels.len().min(4) };
    let rows = panels.len().div_ceil(columns);
    let (panel_w, panel_h) = (320.0, 230.0);
    let (top, left) = (60.0, 20.0);
    let width = (left * 2.0 + panel_w * columns as f64).max(560.0);
    let height = top + panel_h * rows as f64 + 10.0;
    let mut svg = Svg::new(width, height);
    svg.text((width / 2.0, 24.0), TITLE, 15.0, Anchor::Middle);
    legend(&mut svg, comparison, left + 10.0, 46.0);

    for (i, (backend, streams)) in panels.iter().enumerate() {
        let x0 = left + panel_w * (i % columns) as f64;
        let y0 = top + panel_h * (i / columns) as f64;
        // Plot area inside the panel.
        let (px, py, pw, ph) = (x0 + 52.0, y0 + 24.0, panel_w - 72.0, panel_h - 64.0);
        svg.text(
            (x0 + panel_w / 2.0, y0 + 14.0),
            &format!("{backend}, {streams} streams"),
            13.0,
            Anchor::Middle,
        );
        for tick in scale.ticks() {
            let y = py + ph - scale.position(tick) * ph;
            svg.line((px, y), (px + pw, y), GRID, 1.0);
            svg.text_styled((px - 4.0, y + 4.0), &tick_label(tick), 10.0, Anchor::End, AXIS);
        }
        svg.line((px, py), (px, py + ph), AXIS, 1.0);
        svg.line((px, py + ph), (px + pw, py + ph), AXIS, 1.0);
        let x_at = |k: usize| px + pw * (k as f64 + 0.5) / PERCENTILES.len() as f64;
        for (k, label) in PERCENTILES.iter().enumerate() {
            svg.text((x_at(k), py + ph + 16.0), label, 10.0, Anchor::Middle);
        }
        let mut failed_labels = 0.0;
        for (d, spec) in comparison.daemons.iter().enumerate() {
            let result = comparison.cell(&spec.name, *backend, *streams);
            if result.is_some_and(CellResult::is_failed) {
                let at = (px + 6.0, py + 12.0 + 12.0 * failed_labels);
                svg.text_styled(at, &format!("{}: failed", spec.name), 10.0, Anchor::Start, colour(d));
                failed_labels += 1.0;
                continue;
            }
            let Some(points) = result.and_then(ttfb_points) else {
                continue;
            };
            let points: Vec<(f64, f64)> = points
                .iter()
                .enumerate()
                .map(|(k, value)| (x_at(k), py + ph - scale.position(*value) * ph))
                .collect();
            svg.polyline(&points, colour(d), 2.0);
            for point in points {
                svg.circle(point, 3.0, colour(d));
            }
        }
    }
    svg.finish()
}

/// Decades covering some positive values.
struct LogScale {
    low_exponent: i32,
    high_exponent: i32,
}

impl LogScale {
    fn covering(values: &[f64]) -> LogScale {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        let low_exponent = low.log10().floor() as i32;
        let high_exponent = (high.log10().ceil() as i32).max(low_exponent + 1);
        LogScale { low_exponent, high_exponent }
    }

    /// 0 at the bottom decade, 1 at the top; values outside are clamped.
    fn position(&self, value: f64) -> f64 {
        let span = f64::from(self.high_exponent - self.low_exponent);
        let exponent = value.max(f64::MIN_POSITIVE).log10();
        ((exponent - f64::from(self.low_exponent)) / span).clamp(0.0, 1.0)
    }

    fn ticks(&self) -> impl Iterator<Item = f64> {
        (self.low_exponent..=self.high_exponent).map(|exponent| 10f64.powi(exponent))
    }
}

fn tick_label(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        let decimals = (-value.log10()).ceil() as usize;
        format!("{value:.decimals$}")
    }
}

/// Daemon RSS growth per open stream, KiB.
pub fn rss_per_stream(comparison: &Comparison) -> String {
    bar_chart(comparison, "Daemon RSS growth per open stream (KiB)", |result| {
        result.daemon().and_then(|daemon| daemon.rss_per_peak_stream_bytes).map(|bytes| bytes / 1024.0)
    })
}

/// Daemon CPU per content event, microseconds.
pub fn cpu_per_event(comparison: &Comparison) -> String {
    bar_chart(comparison, "Daemon CPU per event (µs)", |result| {
        result.daemon().and_then(|d| d.cpu_us_per_event)
    })
}

/// A bar's value, or why there is none.
enum Bar {
    Value(f64),
    Missing,
    /// The cell failed: its per-stream figures describe only the streams that completed.
    Failed,
}

/// One group of bars per (backend, streams), one bar per daemon, values on top.
fn bar_chart(comparison: &Comparison, title: &str, value: fn(&CellResult) -> Option<f64>) -> String {
    let panels = panels(comparison);
    if panels.is_empty() {
        return no_data(title);
    }
    let daemons = comparison.daemons.len().max(1);
    let grid: Vec<Vec<Bar>> = panels
        .iter()
        .map(|(backend, streams)| {
            comparison
                .daemons
                .iter()
                .map(|spec| match comparison.cell(&spec.name, *backend, *streams) {
                    Some(result) if result.is_failed() => Bar::Failed,
                    Some(result) => value(result).filter(|v| v.is_finite()).map_or(Bar::Missing, Bar::Value),
                    None => Bar::Missing,
                })
                .collect()
        })
        .collect();
    let top_value = nice_ceiling(
        grid.iter()
            .flatten()
            .filter_map(|bar| match bar {
                Bar::Value(v) => Some(*v),
                _ => None,
            })
            .fold(0.0, f64::max),
    );

    let (bar_w, group_gap) = (28.0, 36.0);
    let group_w = bar_w * daemons as f64 + group_gap;
    let (left, top, plot_h, bottom) = (70.0, 64.0, 260.0, 56.0);
    let width = (left + group_w * panels.len() as f64 + 20.0).max(560.0);
    let height = top + plot_h + bottom;
    let mut svg = Svg::new(width, height);
    svg.text((width / 2.0, 24.0), title, 15.0, Anchor::Middle);
    legend(&mut svg, comparison, left, 46.0);

    let y_at = |v: f64| top + plot_h - (v / top_value).clamp(0.0, 1.0) * plot_h;
    let step = top_value / 5.0;
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    for k in 0..=5 {
        let tick = step * f64::from(k);
        let y = y_at(tick);
        svg.line((left, y), (width - 20.0, y), GRID, 1.0);
        svg.text_styled((left - 6.0, y + 4.0), &format!("{tick:.decimals$}"), 10.0, Anchor::End, AXIS);
    }
    svg.line((left, top), (left, top + plot_h), AXIS, 1.0);
    svg.line((left, top + plot_h), (width - 20.0, top + plot_h), AXIS, 1.0);

    for (g, ((backend, streams), values)) in panels.iter().zip(&grid).enumerate() {
        let x0 = left + group_gap / 2.0 + group_w * g as f64;
        for (d, value) in values.iter().enumerate() {
            let x = x0 + bar_w * d as f64;
            match value {
                Bar::Value(v) => {
                    svg.rect(x + 2.0, y_at(*v), bar_w - 4.0, top + plot_h - y_at(*v), colour(d));
                    svg.text((x + bar_w / 2.0, y_at(*v) - 4.0), &value_label(*v), 9.0, Anchor::Middle);
                }
                Bar::Missing => {
                    svg.text_styled((x + bar_w / 2.0, top + plot_h - 4.0), "n/a", 9.0, Anchor::Middle, AXIS)
                }
                Bar::Failed => svg.text_styled(
                    (x + bar_w / 2.0, top + plot_h - 4.0),
                    "failed",
                    9.0,
                    Anchor::Middle,
                    colour(d),
                ),
            }
        }
        let centre = x0 + bar_w * daemons as f64 / 2.0;
        svg.text((centre, top + plot_h + 18.0), backend.name(), 11.0, Anchor::Middle);
        svg.text((centre, top + plot_h + 32.0), &format!("{streams} streams"), 10.0, Anchor::Middle);
    }
    svg.finish()
}

/// The smallest 1, 2 or 5 × 10^k at or above `value` (1 for nothing to show).
fn nice_ceiling(value: f64) -> f64 {
    if !(value > 0.0 && value.is_finite()) {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|nice| *nice >= value * (1.0 - 1e-9))
        .unwrap_or(value)
}

fn value_label(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttfb_chart_draws_one_line_per_cell_with_results() {
        let comparison = super::super::testdata::comparison();
        let svg = ttfb(&comparison);
        // tokio and smol over mock, tokio and peer over http1; smol's http1 cell
        // ended in an error and peer's mock cell failed: a label, not a line.
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 20);
        assert_eq!(svg.matches(">peer: failed</text>").count(), 1, "{svg}");
        assert!(svg.contains(">mock, 100 streams</text>") && svg.contains(">http1, 100 streams</text>"));
        assert!(svg.contains(">smol</text>"), "the legend names the daemons");
    }

    #[test]
    fn bar_charts_label_each_bar_and_mark_missing_ones() {
        let comparison = super::super::testdata::comparison();
        let svg = rss_per_stream(&comparison);
        for label in [">1.50</text>", ">3.00</text>", ">2.00</text>", ">n/a</text>"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        let cpu = cpu_per_event(&comparison);
        assert!(cpu.contains(">4.00</text>") && cpu.contains(">5.00</text>"), "{cpu}");
        // peer's mock cell failed: no 1.00 µs bar (its 2 completed streams), a mark.
        assert!(!cpu.contains(">1.00</text>") && cpu.matches(">failed</text>").count() == 1, "{cpu}");
        assert_eq!(rss_per_stream(&comparison).matches(">failed</text>").count(), 1);
        let empty = Comparison { cells: Vec::new(), ..comparison };
        assert!(rss_per_stream(&empty).contains("no cell has results yet"));
    }

    #[test]
    fn nice_ceilings_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(2.0), 2.0);
        assert_eq!(nice_ceiling(3.7), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(0.042), 0.05);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn the_log_scale_spans_whole_decades_around_the_values() {
        let scale = LogScale::covering(&[0.05, 3.0, 420.0]);
        assert_eq!((scale.low_exponent, scale.high_exponent), (-2, 3));
        assert_eq!(scale.position(0.01), 0.0);
        assert_eq!(scale.position(1000.0), 1.0);
        assert!((scale.position(1.0) - 0.4).abs() < 1e-12);
        let ticks: Vec<String> = scale.ticks().map(tick_label).collect();
        assert_eq!(ticks, ["0.01", "0.1", "1", "10", "100", "1000"]);
        let flat = LogScale::covering(&[2.0, 2.0]);
        assert_eq!((flat.low_exponent, flat.high_exponent), (0, 1), "one value still gets a decade");
    }
}
