//! SVG charts beside the benchmark tables: TTFT percentiles per router, and TTFT over
//! time of a phased tuner run with the phases and the tuner's weight changes marked.
//! Drawn with plotters' SVG backend (text stays text; no font files needed).

use std::path::Path;

use plotters::prelude::*;

use crate::report::Summary;

const WIDTH: u32 = 900;
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// One figure of a summary.
type Stat = fn(&Summary) -> f64;

/// Horizontal bars of TTFT mean, p50, p90 and p99 (ms) per router.
pub fn ttft_bars(path: &Path, title: &str, rows: &[Summary]) -> Result<(), String> {
    if rows.is_empty() {
        return Err("plot: no rows".into());
    }
    let stats: [(&str, Stat); 4] = [
        ("mean", |r| r.ttft_mean),
        ("p50", |r| r.ttft_p50),
        ("p90", |r| r.ttft_p90),
        ("p99", |r| r.ttft_p99),
    ];
    let max_ms = rows
        .iter()
        .flat_map(|r| stats.iter().map(move |(_, f)| f(r) * 1000.0))
        .filter(|v| v.is_finite())
        .fold(1.0_f64, f64::max);
    let height = 80 + 28 * rows.len() as u32 * stats.len() as u32 / 2;
    let root = SVGBackend::new(path, (WIDTH, height.max(240))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let slots = (rows.len() * (stats.len() + 1)) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..max_ms * 1.05, 0.0..slots)
        .map_err(err)?;
    let per = (stats.len() + 1) as f64;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("TTFT (ms)")
        .draw()
        .map_err(err)?;
    // Each router's name in the free slot above its bars.
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let group = (rows.len() - 1 - i) as f64 * per;
            Text::new(
                r.label.clone(),
                (0.0, group + per - 0.05),
                ("sans-serif", 12),
            )
        }))
        .map_err(err)?;
    for (s, (name, stat)) in stats.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let group = (rows.len() - 1 - i) as f64 * per;
                let y = group + (stats.len() - s) as f64;
                Rectangle::new(
                    [(0.0, y - 0.9), (stat(r) * 1000.0, y - 0.1)],
                    color.filled(),
                )
            }))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// One line of a time series: its label and (seconds, value) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A marked moment: a phase start or a weight change.
pub struct Mark {
    pub at: f64,
    pub text: String,
}

/// TTFT over time (seconds), one line per configuration, phases as shaded bands
/// labelled at the top, and the tuner's weight changes as vertical lines.
pub fn ttft_over_time(
    path: &Path,
    title: &str,
    series: &[Series],
    phases: &[(String, f64, f64)],
    changes: &[Mark],
) -> Result<(), String> {
    let end = phases.last().map_or(1.0, |p| p.2).max(1.0);
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.05_f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (WIDTH, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("mean TTFT per slice (s)")
        .draw()
        .map_err(err)?;
    for (i, (name, from, to)) in phases.iter().enumerate() {
        let shade = if i % 2 == 0 {
            RGBColor(240, 240, 240)
        } else {
            RGBColor(225, 232, 240)
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(*from, 0.0), (*to, top)],
                shade.filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                name.clone(),
                (*from + 1.0, top * 0.97),
                ("sans-serif", 13),
            )))
            .map_err(err)?;
    }
    for mark in changes {
        chart
            .draw_series(LineSeries::new(
                [(mark.at, 0.0), (mark.at, top * 0.9)],
                BLACK.mix(0.35).stroke_width(1),
            ))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                mark.text.clone(),
                (mark.at + 0.5, top * 0.88),
                ("sans-serif", 10),
            )))
            .map_err(err)?;
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Mean of `(time, value)` samples per `slice` seconds, as (slice middle, mean).
pub fn per_slice(samples: &[(f64, f64)], slice: f64, end: f64) -> Vec<(f64, f64)> {
    let slice = slice.max(0.1);
    let n = (end / slice).ceil().max(1.0) as usize;
    let mut sums = vec![(0.0, 0usize); n];
    for (t, v) in samples {
        let i = ((t / slice).floor() as usize).min(n - 1);
        sums[i].0 += v;
        sums[i].1 += 1;
    }
    sums.iter()
        .enumerate()
        .filter(|(_, (_, c))| *c > 0)
        .map(|(i, (s, c))| ((i as f64 + 0.5) * slice, s / *c as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_average_per_slice_and_empty_slices_are_skipped() {
        let samples = [(0.5, 1.0), (1.5, 3.0), (2.5, 2.0), (7.0, 4.0)];
        assert_eq!(per_slice(&samples, 3.0, 9.0), vec![(1.5, 2.0), (7.5, 4.0)]);
    }

    #[test]
    fn charts_are_written_as_svg_with_their_labels_as_text() {
        let dir = std::env::temp_dir().join(format!("llmd-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let row = |label: &str, v: f64| Summary {
            label: label.into(),
            ttft_mean: v,
            ttft_p50: v,
            ttft_p90: v * 2.0,
            ttft_p99: v * 3.0,
            e2e_mean: v,
            throughput: 1.0,
            ok: 1,
            total: 1,
            note: String::new(),
        };
        let bars = dir.join("bars.svg");
        ttft_bars(
            &bars,
            "shared prefix",
            &[row("round-robin", 0.5), row("llmd-epp", 0.02)],
        )
        .expect("bars");
        let text = std::fs::read_to_string(&bars).expect("svg");
        assert!(
            text.starts_with("<svg") && text.contains("llmd-epp"),
            "{text}"
        );
        let over = dir.join("time.svg");
        ttft_over_time(
            &over,
            "surge",
            &[Series {
                label: "tuned".into(),
                points: vec![(1.5, 0.1), (4.5, 0.2)],
            }],
            &[("calm".into(), 0.0, 30.0)],
            &[Mark {
                at: 9.0,
                text: "prefix 3 -> 2".into(),
            }],
        )
        .expect("time");
        let text = std::fs::read_to_string(&over).expect("svg");
        assert!(
            text.contains("prefix 3 -&gt; 2") || text.contains("prefix 3 -> 2"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
