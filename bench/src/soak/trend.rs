//! Does a level keep growing after warm-up? A least-squares line through the
//! post-warm-up samples, its growth projected over that span and compared with a
//! share of the level (never less than an absolute floor, so noise on a small level
//! cannot fail a run).

use serde::Serialize;

/// Fewest post-warm-up samples a judgement is made on.
pub const MIN_SAMPLES: usize = 10;

/// A fitted line `value = intercept + slope * t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub slope: f64,
    pub intercept: f64,
}

/// Least squares through `(t, value)` points; `None` with fewer than two distinct times.
pub fn fit(points: &[(f64, f64)]) -> Option<Line> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut stt, mut stv) = (0.0, 0.0);
    for (t, v) in points {
        stt += (t - mean_t) * (t - mean_t);
        stv += (t - mean_t) * (v - mean_v);
    }
    if stt <= 0.0 {
        return None;
    }
    let slope = stv / stt;
    Some(Line { slope, intercept: mean_v - slope * mean_t })
}

/// How much growth is tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GrowthLimit {
    /// Growth over the judged span as a share of the level at its start.
    pub relative: f64,
    /// Growth below this never fails (bytes or fds).
    pub floor: f64,
}

/// The judgement on one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Growth {
    pub metric: &'static str,
    pub samples: usize,
    /// Seconds from the first to the last judged sample.
    pub span_secs: f64,
    /// Fitted units per second, and per hour for reading.
    pub slope_per_sec: f64,
    pub slope_per_hour: f64,
    /// The fitted value at the start of the span.
    pub level: f64,
    /// slope × span.
    pub projected_growth: f64,
    /// max(relative × level, floor).
    pub threshold: f64,
    pub limit: GrowthLimit,
    /// Why it fails, if it does.
    pub failure: Option<String>,
}

/// Judges `points` (already the post-warm-up ones) against `limit`.
pub fn judge(metric: &'static str, points: &[(f64, f64)], limit: GrowthLimit) -> Growth {
    let span_secs = match (points.first(), points.last()) {
        (Some(first), Some(last)) => last.0 - first.0,
        _ => 0.0,
    };
    let line = fit(points);
    let slope = line.map_or(0.0, |l| l.slope);
    let start = points.first().map_or(0.0, |p| p.0);
    let level = line.map_or(0.0, |l| l.intercept + l.slope * start);
    let projected_growth = slope * span_secs;
    let threshold = (limit.relative * level).max(limit.floor);
    let failure = if points.len() < MIN_SAMPLES || line.is_none() {
        Some(format!(
            "{metric}: only {} samples after warm-up (at least {MIN_SAMPLES} are needed to judge growth)",
            points.len()
        ))
    } else if projected_growth > threshold {
        Some(format!(
            "{metric} kept growing after warm-up: {projected_growth:.1} over {span_secs:.0} s \
             (slope {slope:.4}/s) from a level of {level:.1}, above the threshold {threshold:.1} \
             (max of {:.0}% of the level and {})",
            limit.relative * 100.0,
            limit.floor
        ))
    } else {
        None
    };
    Growth {
        metric,
        samples: points.len(),
        span_secs,
        slope_per_sec: slope,
        slope_per_hour: slope * 3600.0,
        level,
        projected_growth,
        threshold,
        limit,
        failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: GrowthLimit = GrowthLimit { relative: 0.10, floor: 5.0 };

    fn series(n: usize, f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..n).map(|i| i as f64).map(|t| (t, f(t))).collect()
    }

    #[test]
    fn the_fit_recovers_a_line() {
        let line = fit(&series(50, |t| 3.0 + 0.5 * t)).expect("a line");
        assert!((line.slope - 0.5).abs() < 1e-9, "{line:?}");
        assert!((line.intercept - 3.0).abs() < 1e-9, "{line:?}");
        assert_eq!(fit(&[(1.0, 2.0)]), None);
        assert_eq!(fit(&[(1.0, 2.0), (1.0, 3.0)]), None, "one time only");
    }

    #[test]
    fn a_flat_noisy_level_passes() {
        // ±2% square-wave noise around 1000: no trend.
        let growth = judge("fds", &series(600, |t| if (t as u64) % 2 == 0 { 1020.0 } else { 980.0 }), LIMIT);
        assert_eq!(growth.failure, None, "{growth:?}");
        assert!(growth.projected_growth.abs() < 5.0, "{growth:?}");
        assert!((growth.threshold - 100.0).abs() < 1.0, "10% of ~1000: {growth:?}");
    }

    #[test]
    fn steady_growth_beyond_the_threshold_fails_and_says_by_how_much() {
        // 1000 → 1200 over the span: 20% growth.
        let growth = judge("fds", &series(101, |t| 1000.0 + 2.0 * t), LIMIT);
        let failure = growth.failure.clone().expect("fails");
        assert!(failure.contains("fds kept growing after warm-up: 200.0 over 100 s"), "{failure}");
        assert!(failure.contains("threshold 100.0"), "{failure}");
        assert!((growth.slope_per_hour - 7200.0).abs() < 1e-6);
    }

    #[test]
    fn growth_under_the_threshold_passes_and_the_floor_shields_small_levels() {
        let growth = judge("fds", &series(101, |t| 1000.0 + 0.5 * t), LIMIT);
        assert_eq!(growth.failure, None, "5% growth: {growth:?}");
        // 10 → 14 is 40% but under the floor of 5.
        let small = judge("fds", &series(101, |t| 10.0 + 0.04 * t), LIMIT);
        assert_eq!(small.failure, None, "{small:?}");
        assert_eq!(small.threshold, 5.0);
    }

    #[test]
    fn too_few_samples_fail_rather_than_pass() {
        let growth = judge("rss", &series(5, |_| 100.0), LIMIT);
        assert!(growth.failure.expect("fails").contains("only 5 samples after warm-up"));
    }

    #[test]
    fn shrinking_passes() {
        assert_eq!(judge("rss", &series(100, |t| 1000.0 - t), LIMIT).failure, None);
    }
}
