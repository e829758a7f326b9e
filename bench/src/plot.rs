// SPDX-License-Identifier: MIT OR Apache-2.0
//! The ratio chart (PNG), drawn with plotters' bitmap backend. Text is
//! rendered by plotters (`ab_glyph`) from DejaVu Sans, embedded in the
//! binary (`bench/fonts/`, with its license), so the chart looks the same
//! on machines without fonts.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::report::{Comparison, MetricSummary, Report};
use crate::workloads::Group;

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

const ROW: i32 = 28;
const LEFT: i32 = 370;
const RIGHT_PAD: i32 = 150;
const TOP: i32 = 70;
const WIDTH: i32 = 1140;

/// The font every text is set in, under the name plotters knows it by.
const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
pub const FAMILY: &str = "DejaVu Sans";

/// Makes the embedded font available to plotters as [`FAMILY`].
pub fn register_embedded_font() -> Result<()> {
    register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the embedded font {FAMILY} does not load"))
}
/// Text sizes, pixels: labels and values, notes.
const LARGE: u32 = 17;
const SMALL: u32 = 14;

fn style(size: u32, color: RGBColor) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&color)
}

/// Draws `s` with its top-left corner at (x, y).
fn text(area: &Area, x: i32, y: i32, s: &str, size: u32, color: RGBColor) -> Result<()> {
    area.draw(&Text::new(s, (x, y), style(size, color)))
        .map_err(|e| anyhow!("drawing text: {e:?}"))
}

/// Draws `s` starting at x, centred vertically on `y`.
fn text_mid(area: &Area, x: i32, y: i32, s: &str, size: u32, color: RGBColor) -> Result<()> {
    let style = style(size, color).pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new(s, (x, y), style))
        .map_err(|e| anyhow!("drawing text: {e:?}"))
}

fn text_width(area: &Area, s: &str, size: u32) -> Result<i32> {
    let (w, _) = area
        .estimate_text_size(s, &style(size, BLACK))
        .map_err(|e| anyhow!("measuring text: {e:?}"))?;
    Ok(w as i32)
}

fn rect(area: &Area, a: (i32, i32), b: (i32, i32), color: RGBColor) -> Result<()> {
    area.draw(&Rectangle::new([a, b], color.filled()))
        .map_err(|e| anyhow!("drawing: {e:?}"))
}

fn line(area: &Area, a: (i32, i32), b: (i32, i32), color: RGBColor, width: u32) -> Result<()> {
    area.draw(&PathElement::new(vec![a, b], color.stroke_width(width)))
        .map_err(|e| anyhow!("drawing: {e:?}"))
}

/// The ratio axis' tick steps, smallest first.
const STEPS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0];
/// Ticks (gaps between labels) the axis' width holds.
const MAX_TICKS: f64 = 12.0;

/// The ratio axis: from `lo` to `hi`, ticks every `step`.
struct Scale {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Scale {
    /// At least 0.9..1.1, widened to fit every value, in the smallest of
    /// [`STEPS`] that needs at most [`MAX_TICKS`] ticks (labels wider
    /// apart than that overlap).
    fn fitting(series: &[&Comparison]) -> Self {
        let mut lo: f64 = 0.9;
        let mut hi: f64 = 1.1;
        for m in series.iter().flat_map(|c| &c.metrics) {
            for v in [m.ratio, m.ratio_min, m.ratio_max].into_iter().flatten() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        let step = STEPS
            .into_iter()
            .find(|step| (hi - lo) / step <= MAX_TICKS)
            .unwrap_or(STEPS[STEPS.len() - 1]);
        Scale {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
            step,
        }
    }

    /// The x pixel of ratio `v`.
    fn x(&self, v: f64) -> i32 {
        let plot_w = (WIDTH - LEFT - RIGHT_PAD) as f64;
        LEFT + ((v - self.lo) / (self.hi - self.lo) * plot_w).round() as i32
    }
}

/// Height of one scheduler's bar when a metric's row has several.
const BAR: i32 = 20;

/// Where the rows go: one per metric, with one bar per series (one
/// scheduler against the default).
struct Layout {
    series: usize,
}

impl Layout {
    /// One metric's row: [`ROW`] for one series, a [`BAR`] per series for
    /// more.
    fn row_h(&self) -> i32 {
        match self.series {
            0 | 1 => ROW,
            n => BAR * n as i32 + 8,
        }
    }

    /// The top of metric row `i`.
    fn top(&self, i: usize) -> i32 {
        TOP + i as i32 * self.row_h()
    }

    /// The top and bottom of series `j`'s bar in metric row `i`.
    fn bar(&self, i: usize, j: usize) -> (i32, i32) {
        match self.series {
            0 | 1 => (self.top(i) + 6, self.top(i) + ROW - 6),
            _ => {
                let y = self.top(i) + 4 + j as i32 * BAR;
                (y + 2, y + BAR - 2)
            }
        }
    }
}

const GREY_TEXT: RGBColor = RGBColor(80, 80, 80);

/// The series' colours when there are several (colour-blind safe).
const PALETTE: [RGBColor; 5] = [
    RGBColor(230, 159, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(213, 94, 0),
];

/// Title and subtitle.
fn header(area: &Area, report: &Report) -> Result<()> {
    let title = format!(
        "Enoki {} / default scheduler: cost ratio (>1 = worse)",
        report.schedulers.join(", ")
    );
    text(area, 10, 12, &title, LARGE + 3, BLACK)?;
    let sub = format!(
        "{} reps, {}; bars: median per-rep ratio, whiskers: per-rep range",
        report.meta.reps, report.meta.vm
    );
    text(area, 10, 40, &sub, SMALL, GREY_TEXT)
}

/// The target band 1.00-1.05, the grid and its labels below `bottom`.
fn grid(area: &Area, scale: &Scale, bottom: i32) -> Result<()> {
    let band = RGBColor(225, 245, 225);
    rect(area, (scale.x(1.0), TOP), (scale.x(1.05), bottom), band)?;
    let mut v = scale.lo;
    while v <= scale.hi + 1e-9 {
        let x = scale.x(v);
        line(area, (x, TOP), (x, bottom), RGBColor(220, 220, 220), 1)?;
        let label = format!("{v:.2}");
        let w = text_width(area, &label, SMALL)?;
        text(area, x - w / 2, bottom + 6, &label, SMALL, BLACK)?;
        v += scale.step;
    }
    Ok(())
}

/// Metric row `i`'s label: its group and key.
fn label(area: &Area, layout: &Layout, i: usize, m: &MetricSummary) -> Result<()> {
    let y = layout.top(i);
    if i % 2 == 1 {
        let bottom = y + layout.row_h();
        rect(area, (0, y), (LEFT - 4, bottom), RGBColor(245, 245, 245))?;
    }
    let group = match m.group {
        Group::Pipe => "pipe",
        Group::Schbench => "sch",
        Group::App => "app",
        Group::Switch => "switch",
        Group::SysTime => "sys",
    };
    let ty = y + layout.row_h() / 2;
    text_mid(area, 6, ty, group, LARGE, BLACK)?;
    text_mid(area, 56, ty, &m.key, LARGE, BLACK)
}

/// One bar between `y0` and `y1`: the metric's ratio and whiskers, and
/// its value (`name` before it, for one of several series). One series
/// is red where worse and blue where better; several have their colour.
fn bar(
    area: &Area,
    scale: &Scale,
    (y0, y1): (i32, i32),
    m: &MetricSummary,
    series: Option<(&str, RGBColor)>,
) -> Result<()> {
    let (ty, value_x) = ((y0 + y1) / 2, WIDTH - RIGHT_PAD + 10);
    let (name, size) = match series {
        Some((name, _)) => (format!("{name} "), SMALL),
        None => (String::new(), LARGE),
    };
    let Some(r) = m.ratio else {
        let failed = format!("{name}FAILED");
        return text_mid(area, value_x, ty, &failed, size, RGBColor(200, 0, 0));
    };
    let (a, b) = (scale.x(1.0).min(scale.x(r)), scale.x(1.0).max(scale.x(r)));
    let color = match series {
        Some((_, c)) => c,
        None if r > 1.0 => RGBColor(210, 60, 50),
        None => RGBColor(50, 100, 200),
    };
    rect(area, (a, y0), (b.max(a + 2), y1), color)?;
    if let (Some(lo), Some(hi)) = (m.ratio_min, m.ratio_max) {
        let (lo, hi) = (scale.x(lo), scale.x(hi));
        line(area, (lo, ty), (hi, ty), BLACK, 1)?;
        line(area, (lo, ty - 5), (lo, ty + 5), BLACK, 1)?;
        line(area, (hi, ty - 5), (hi, ty + 5), BLACK, 1)?;
    }
    text_mid(area, value_x, ty, &format!("{name}{r:.3}"), size, BLACK)
}

/// The legend and the geometric means under the chart.
fn footer(area: &Area, series: &[&Comparison], bottom: i32) -> Result<()> {
    let y = bottom + 30;
    if let [one] = series {
        let legend = format!(
            "red: {0} worse, blue: {0} better, green band: within 5 %",
            one.sched
        );
        text(area, 10, y, &legend, SMALL, GREY_TEXT)?;
    } else {
        let mut x = 10;
        for (c, color) in series.iter().zip(PALETTE.iter().cycle()) {
            rect(area, (x, y + 2), (x + 12, y + 14), *color)?;
            text(area, x + 16, y, &c.sched, SMALL, BLACK)?;
            x += 16 + text_width(area, &c.sched, SMALL)? + 16;
        }
        text(area, x, y, "green band: within 5 %", SMALL, GREY_TEXT)?;
    }
    let g = |v: Option<f64>| v.map(|g| format!("{g:.3}")).unwrap_or_else(|| "-".into());
    let means: Vec<String> = series
        .iter()
        .map(|c| {
            let prefix = if series.len() > 1 {
                format!("{} ", c.sched)
            } else {
                String::new()
            };
            format!(
                "{prefix}applications {}, all {}",
                g(c.summary.geomean_app),
                g(c.summary.geomean_all)
            )
        })
        .collect();
    let sum = format!("geomean: {}", means.join("; "));
    text(area, 10, bottom + 48, &sum, LARGE, BLACK)
}

/// Horizontal bars of each metric's ratio around 1.0, one per scheduler
/// against the default (one scheduler: red where worse, blue where
/// better; several: a colour each), whiskers for the per-repetition
/// range, the 5 % band shaded, failures marked.
pub fn ratios_png(path: &Path, report: &Report) -> Result<()> {
    let series: Vec<&Comparison> = report.vs_default().collect();
    let layout = Layout {
        series: series.len(),
    };
    let rows: &[MetricSummary] = series.first().map_or(&[], |c| &c.metrics);
    let bottom = layout.top(rows.len());
    register_embedded_font()?;
    let area = BitMapBackend::new(path, (WIDTH as u32, (bottom + 90) as u32)).into_drawing_area();
    area.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let scale = Scale::fitting(&series);
    header(&area, report)?;
    grid(&area, &scale, bottom)?;
    for (i, m) in rows.iter().enumerate() {
        label(&area, &layout, i, m)?;
        for (j, (c, color)) in series.iter().zip(PALETTE.iter().cycle()).enumerate() {
            // Every comparison has the same metrics, in the same order.
            let Some(m) = c.metrics.get(i) else { continue };
            let name = (series.len() > 1).then_some((c.sched.as_str(), *color));
            bar(&area, &scale, layout.bar(i, j), m, name)?;
        }
    }
    let one = scale.x(1.0);
    line(&area, (one, TOP - 4), (one, bottom + 4), BLACK, 2)?;
    footer(&area, &series, bottom)?;
    area.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}
