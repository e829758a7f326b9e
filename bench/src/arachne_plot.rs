// SPDX-License-Identifier: MIT OR Apache-2.0
//! The Arachne table's plots (PNG): the requests' p99 latency over the
//! load (log scale) and the batch job's CPUs over the load, one line per
//! configuration: the median over the repetitions, a bar from the lowest
//! to the highest. A hollow marker: some run at that load fell behind.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

use crate::arachne::{ArachneReport, Config, LinePoint, Row, CONFIGS};
use crate::plot::register_embedded_font;
use crate::sweep_plot::{err, line_chart, Chart, XAxis, YAxis};

/// The files, and what they show (also their alt text in results.md).
pub const FILES: [&str; 2] = ["p99.png", "batch_cpus.png"];
pub const TITLES: [&str; 2] = [
    "request p99 latency vs load",
    "the batch job's CPUs vs load",
];

fn color(c: Config) -> RGBColor {
    match c {
        Config::Default => RGBColor(60, 60, 60),
        Config::Arachne => RGBColor(210, 60, 50),
    }
}

/// One plot's y axis and what goes on it.
struct Plot<Y> {
    title: &'static str,
    y: YAxis<'static, Y>,
    stat: fn(&Row) -> &crate::table::Stat,
}

/// From 0 to a little past the highest load.
fn x_range(r: &ArachneReport) -> Range<f64> {
    let max = r.config.rates.iter().copied().max().unwrap_or(1);
    0.0..f64::from(max) * 1.1
}

/// Whole decades around every value of the p99 lines, ms.
fn decades(r: &ArachneReport) -> Range<f64> {
    let values = CONFIGS
        .iter()
        .flat_map(|&c| crate::arachne::line(r, c, |row| &row.p99_ms))
        .flat_map(|p| [p.min, p.max])
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return 1.0..1000.0;
    }
    let (lo, hi) = (lo.log10().floor(), hi.log10().ceil());
    10f64.powf(lo)..10f64.powf(hi.max(lo + 1.0))
}

fn draw<Y>(path: &Path, r: &ArachneReport, p: Plot<Y>) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x_desc = format!(
        "load (requests/s of {} ms each)",
        r.config.work_us as f64 / 1e3
    );
    let x = XAxis {
        range: x_range(r),
        desc: &x_desc,
    };
    line_chart(path, p.title, x, p.y, |chart| {
        CONFIGS
            .iter()
            .try_for_each(|&c| draw_config(chart, &crate::arachne::line(r, c, p.stat), c))
    })
}

/// One configuration's medians over the load, with min-max bars (hollow
/// markers: some run fell behind).
fn draw_config<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<Y>,
    points: &[LinePoint],
    c: Config,
) -> Result<()> {
    let col = color(c);
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|q| (q.rate, q.median)),
            col.stroke_width(2),
        ))
        .map_err(err)?
        .label(c.label())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], col.stroke_width(2)));
    chart
        .draw_series(
            points.iter().map(|q| {
                PathElement::new(vec![(q.rate, q.min), (q.rate, q.max)], col.stroke_width(1))
            }),
        )
        .map_err(err)?;
    chart
        .draw_series(points.iter().map(|q| {
            let style = if q.behind {
                col.stroke_width(2)
            } else {
                col.filled()
            };
            Circle::new((q.rate, q.median), 5, style)
        }))
        .map_err(err)?;
    Ok(())
}

/// Writes the plots ([`FILES`]) into `dir`; returns their paths.
pub fn pngs(dir: &Path, r: &ArachneReport) -> Result<Vec<PathBuf>> {
    register_embedded_font()?;
    let [p99, batch] = FILES.map(|f| dir.join(f));
    draw(
        &p99,
        r,
        Plot {
            title: TITLES[0],
            y: YAxis {
                range: decades(r).log_scale(),
                desc: "request p99 latency (ms, log)",
                tick: |v| format!("{v:.0}"),
                // Latency grows with load.
                legend: SeriesLabelPosition::UpperLeft,
            },
            stat: |row| &row.p99_ms,
        },
    )?;
    draw(
        &batch,
        r,
        Plot {
            title: TITLES[1],
            y: YAxis {
                range: 0.0..8.0,
                desc: "batch job's CPUs (of 8)",
                tick: |v| format!("{v:.0}"),
                // The batch job gets less as load grows.
                legend: SeriesLabelPosition::LowerLeft,
            },
            stat: |row| &row.batch_cpus,
        },
    )?;
    Ok(vec![p99, batch])
}
