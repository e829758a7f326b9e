// SPDX-License-Identifier: MIT OR Apache-2.0
//! The Shinjuku sweep's charts (PNG), the panels of the paper's Figure 2:
//! (a) short requests' p99 vs offered load, server alone, (b) the same with
//! the batch job, both on a log scale, and (c) the batch job's CPU share.
//! Failed points are left out of their line; the markdown lists them.
//! Points where the server fell behind are hollow: their p99 leaves out
//! the requests it never served.

use std::fmt::Debug;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::plot::{register_embedded_font, FAMILY};
use crate::sweep::{self, Sched, Series, SweepConfig, SweepReport, BATCH_SHARE, P99};

const SIZE: (u32, u32) = (900, 600);

/// The file names, in the order of the paper's panels.
pub const FILES: [&str; 3] = ["p99_alone.png", "p99_batch.png", "batch_share.png"];

/// One scheduler's line: (offered load, value, saturated) points.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64, bool)>,
}

pub(crate) fn err(e: impl Debug) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// The same color for a scheduler in every chart.
fn color(s: Series) -> RGBColor {
    match s.sched {
        Sched::Default => RGBColor(60, 60, 60),
        Sched::Fair => RGBColor(50, 100, 200),
        Sched::Shinjuku => RGBColor(210, 60, 50),
    }
}

fn lines(r: &SweepReport, series: &[Series], key: &str) -> Vec<Line> {
    series
        .iter()
        .map(|&s| Line {
            label: r.config.label(s),
            color: color(s),
            points: r.line(s, key),
        })
        .collect()
}

/// Offered load from 0 to a little past the highest rate.
fn x_range(cfg: &SweepConfig) -> Range<f64> {
    let max = cfg.rates.iter().copied().max().unwrap_or(1);
    0.0..f64::from(max) * 1.05
}

/// A log axis around every value, whole decades so the ticks read well.
fn log_range(lines: &[Line]) -> Range<f64> {
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = ys
        .filter(|y| *y > 0.0)
        .fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    if lo > hi {
        return 1.0..1000.0;
    }
    10f64.powf(lo.log10().floor())..10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0))
}

/// The y axis of a chart: its range (linear or log), name and tick labels,
/// and where the legend goes (a corner the lines keep clear of).
pub(crate) struct YAxis<'a, Y> {
    pub range: Y,
    pub desc: &'a str,
    pub tick: fn(&f64) -> String,
    pub legend: SeriesLabelPosition,
}

/// The x axis of a chart: its range and name.
pub(crate) struct XAxis<'a> {
    pub range: Range<f64>,
    pub desc: &'a str,
}

/// A chart's drawing surface: x linear, y on the coordinates `Y`.
pub(crate) type Chart<'a, 'b, Y> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

/// Draws a chart into `path`: its axes, then what `series` draws on it
/// (labelled series go into the legend), then the legend.
pub(crate) fn line_chart<Y, F>(
    path: &Path,
    title: &str,
    x: XAxis,
    y: YAxis<Y>,
    series: F,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    F: FnOnce(&mut Chart<Y::CoordDescType>) -> Result<()>,
{
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x.range, y.range)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x.desc)
        .y_desc(y.desc)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 16))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&y.tick)
        .draw()
        .map_err(err)?;
    series(&mut chart)?;
    chart
        .configure_series_labels()
        .position(y.legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 15))
        .draw()
        .map_err(err)?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))
}

/// Draws `lines` over offered load into `path`.
fn chart<Y>(path: &Path, title: &str, x: Range<f64>, y: YAxis<Y>, lines: &[Line]) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x = XAxis {
        range: x,
        desc: "offered load (requests/s)",
    };
    line_chart(path, title, x, y, |chart| {
        lines.iter().try_for_each(|l| draw_line(chart, l))
    })
}

/// One line with its markers (hollow and larger where saturated).
fn draw_line<Y: Ranged<ValueType = f64>>(chart: &mut Chart<Y>, l: &Line) -> Result<()> {
    let c = l.color;
    let xy = l.points.iter().map(|&(x, y, _)| (x, y));
    chart
        .draw_series(LineSeries::new(xy, c.stroke_width(2)))
        .map_err(err)?
        .label(l.label.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2)));
    let marker = |&(x, y, saturated): &(f64, f64, bool)| {
        let style = if saturated {
            c.stroke_width(2)
        } else {
            c.filled()
        };
        Circle::new((x, y), if saturated { 6 } else { 4 }, style)
    };
    chart
        .draw_series(l.points.iter().map(marker))
        .map_err(err)?;
    Ok(())
}

/// Short requests' p99 of `series`, log scale.
fn p99_png(path: &Path, r: &SweepReport, title: &str, series: &[Series]) -> Result<()> {
    let ls = lines(r, series, P99);
    let y = YAxis {
        range: log_range(&ls).log_scale(),
        desc: "short requests' p99 latency (us, log)",
        tick: |v| format!("{v:.0}"),
        // Latency grows with load.
        legend: SeriesLabelPosition::UpperLeft,
    };
    chart(path, title, x_range(&r.config), y, &ls)
}

/// Writes the three charts into `dir`; returns their paths.
pub fn sweep_pngs(dir: &Path, r: &SweepReport) -> Result<Vec<PathBuf>> {
    register_embedded_font()?;
    let [alone, batch, share] = FILES.map(|f| dir.join(f));
    p99_png(
        &alone,
        r,
        "(a) dispersive load, server alone",
        &sweep::alone(),
    )?;
    p99_png(
        &batch,
        r,
        "(b) dispersive load with a batch job",
        &sweep::with_batch(),
    )?;
    chart(
        &share,
        "(c) the batch job's share of the worker CPUs",
        x_range(&r.config),
        YAxis {
            range: 0.0..1.0,
            desc: "batch CPU share",
            tick: |v| format!("{v:.1}"),
            // The batch job gets less as load grows.
            legend: SeriesLabelPosition::LowerLeft,
        },
        &lines(r, &sweep::with_batch(), BATCH_SHARE),
    )?;
    Ok(vec![alone, batch, share])
}
