//! The backtest as a picture (SVG): one panel per signal over time against its warning and
//! critical lines, would-be incidents shaded, releases as vertical lines, and the rung chosen
//! written where it was decided.

use plotters::prelude::*;

use super::Backtest;
use crate::api::EffectiveMetric;

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the plot: {0}")]
pub struct PlotError(String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

const PANEL_HEIGHT: u32 = 260;
const WIDTH: u32 = 1400;
const INCIDENT: RGBColor = RGBColor(250, 200, 200);
const WARNING: RGBColor = RGBColor(230, 150, 0);
const CRITICAL: RGBColor = RGBColor(200, 0, 0);
const RELEASE: RGBColor = RGBColor(40, 90, 220);
const SIGNAL: RGBColor = RGBColor(30, 30, 30);

/// The SVG document of a backtest of a policy with these signals.
pub fn svg(
    backtest: &Backtest,
    metrics: &[EffectiveMetric],
    title: &str,
) -> Result<String, PlotError> {
    let mut out = String::new();
    let height = PANEL_HEIGHT * metrics.len().max(1) as u32 + 40;
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
        let panels = root.split_evenly((metrics.len().max(1), 1));
        let start = backtest.from.map_or(0, |t| t.as_second());
        let hours = |t: jiff::Timestamp| (t.as_second() - start) as f64 / 3600.0;
        let end = backtest.to.map_or(1.0, hours).max(1.0 / 60.0);
        for (metric, panel) in metrics.iter().zip(&panels) {
            // Runs of judged values; a gap (no data, low traffic) breaks the line.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![vec![]];
            for s in &backtest.steps {
                match s.values.get(&metric.name).copied().flatten() {
                    Some(v) => runs.last_mut().expect("one run").push((hours(s.at), v)),
                    None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(vec![]),
                    None => {}
                }
            }
            let points: Vec<(f64, f64)> = runs.iter().flatten().copied().collect();
            let top = points
                .iter()
                .map(|p| p.1)
                .chain(metric.warning)
                .chain(metric.critical)
                .fold(0.0_f64, f64::max)
                * 1.15;
            let top = if top > 0.0 { top } else { 1.0 };
            let label_time = |h: &f64| {
                let t = jiff::Timestamp::from_second(start + (h * 3600.0) as i64)
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                t.strftime("%m-%d %H:%M").to_string()
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(&metric.name, ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..end, 0.0..top)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_labels(10)
                .x_label_formatter(&label_time)
                .y_labels(6)
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(err)?;
            for i in &backtest.incidents {
                let from = hours(i.opened_at);
                let to = i.closed_at.map_or(end, hours);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(from, 0.0), (to, top)],
                        INCIDENT.filled(),
                    )))
                    .map_err(err)?;
            }
            for r in &backtest.releases {
                let x = hours(*r);
                if !(0.0..=end).contains(&x) {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(
                        [(x, 0.0), (x, top)],
                        RELEASE.stroke_width(2),
                    ))
                    .map_err(err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        "release",
                        (x, top * 0.97),
                        ("sans-serif", 13).into_font().color(&RELEASE),
                    )))
                    .map_err(err)?;
            }
            let line = |value: Option<f64>, color: RGBColor, name: &'static str| {
                value.map(|v| (v, color, name))
            };
            for (v, color, name) in [
                line(metric.warning, WARNING, "warning"),
                line(metric.critical, CRITICAL, "critical"),
            ]
            .into_iter()
            .flatten()
            {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(0.0, v), (end, v)],
                        8,
                        5,
                        color.stroke_width(2),
                    ))
                    .map_err(err)?
                    .label(format!("{name} {v}"))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
            }
            for (k, run) in runs.into_iter().enumerate() {
                let series = chart
                    .draw_series(LineSeries::new(run, SIGNAL.stroke_width(1)))
                    .map_err(err)?;
                if k == 0 {
                    series
                        .label(metric.name.clone())
                        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], SIGNAL));
                }
            }
            for i in &backtest.incidents {
                for (k, (at, rung)) in i.rungs.iter().enumerate() {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            rung.to_string(),
                            (hours(*at), top * (0.88 - 0.08 * k as f64)),
                            ("sans-serif", 13).into_font().color(&CRITICAL),
                        )))
                        .map_err(err)?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}
