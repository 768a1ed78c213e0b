//! The plot: the daemon's RSS and open fds over the run, one panel each, with the
//! end of warm-up marked and the fitted line drawn over the judged span.

use std::path::Path;

use plotters::prelude::*;

use super::samples::{Sample, MIB};
use super::trend::Growth;

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 320;

/// One panel's data.
struct Panel<'a> {
    title: String,
    unit: &'a str,
    points: Vec<(f64, f64)>,
    growth: &'a Growth,
    /// Divides the fitted values into the panel's unit.
    scale: f64,
}

/// Writes the SVG to `path`.
pub fn write(
    path: &Path,
    title: &str,
    samples: &[Sample],
    warmup_secs: f64,
    rss: &Growth,
    fds: &Growth,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT * 2 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| e.to_string())?;
    let (upper, lower) = root.split_vertically(PANEL_HEIGHT);
    let minutes = |t: f64| t / 60.0;
    let panels = [
        Panel {
            title: "daemon RSS".to_owned(),
            unit: "MiB",
            points: samples.iter().map(|s| (minutes(s.t_secs), s.rss_bytes as f64 / MIB)).collect(),
            growth: rss,
            scale: MIB,
        },
        Panel {
            title: "daemon open fds".to_owned(),
            unit: "fds",
            points: samples.iter().map(|s| (minutes(s.t_secs), s.fds as f64)).collect(),
            growth: fds,
            scale: 1.0,
        },
    ];
    for (area, panel) in [upper, lower].iter().zip(panels.iter()) {
        draw_panel(area, panel, minutes(warmup_secs)).map_err(|e| format!("drawing {}: {e}", panel.title))?;
    }
    root.present().map_err(|e| format!("writing {}: {e}", path.display()))
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel<'_>,
    warmup_min: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let x_max = panel.points.last().map_or(1.0, |p| p.0).max(warmup_min).max(1.0 / 60.0);
    let y_max = panel.points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.15;
    let caption = format!(
        "{} ({}): after warm-up (red) the fitted slope (black) is {:+.2} {}/h; growth allowed over the span {:.1} {}",
        panel.title,
        panel.unit,
        panel.growth.slope_per_hour / panel.scale,
        panel.unit,
        panel.growth.threshold / panel.scale,
        panel.unit,
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc(panel.unit)
        .max_light_lines(0)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series(LineSeries::new(panel.points.iter().copied(), BLUE.stroke_width(1)))?;
    chart.draw_series(LineSeries::new([(warmup_min, 0.0), (warmup_min, y_max)], RED.mix(0.6)))?;
    // The fitted line over the judged span: level at its start, plus slope × time.
    if let Some(first) = panel.points.iter().find(|p| p.0 >= warmup_min) {
        let last = first.0 + panel.growth.span_secs / 60.0;
        let at = |minute: f64| {
            (panel.growth.level + panel.growth.slope_per_sec * (minute - first.0) * 60.0) / panel.scale
        };
        chart.draw_series(LineSeries::new(
            [(first.0, at(first.0)), (last, at(last))],
            BLACK.stroke_width(2),
        ))?;
    }
    Ok(())
}
