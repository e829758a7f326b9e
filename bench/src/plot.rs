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

use crate::report::{MetricSummary, Report};
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

/// The ratio axis: from `lo` to `hi`, ticks every `step`.
struct Scale {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Scale {
    /// At least 0.9..1.1, widened to fit every value, in steps of 0.05 (0.1
    /// or 0.25 for wide ranges).
    fn fitting(rows: &[MetricSummary]) -> Self {
        let mut lo: f64 = 0.9;
        let mut hi: f64 = 1.1;
        for m in rows {
            for v in [m.ratio, m.ratio_min, m.ratio_max].into_iter().flatten() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        let step = if hi - lo > 1.0 {
            0.25
        } else if hi - lo > 0.4 {
            0.1
        } else {
            0.05
        };
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

const GREY_TEXT: RGBColor = RGBColor(80, 80, 80);

/// Title and subtitle.
fn header(area: &Area, report: &Report) -> Result<()> {
    let title = format!(
        "Enoki {} / default scheduler: cost ratio (>1 = Enoki worse)",
        report.meta.scheduler
    );
    text(area, 10, 12, &title, LARGE + 3, BLACK)?;
    let sub = format!(
        "{} reps, {}; bars: ratio of medians, whiskers: per-rep range",
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

/// Row `i`: the metric's name, its bar and whiskers, its value.
fn row(area: &Area, scale: &Scale, i: usize, m: &MetricSummary) -> Result<()> {
    let y = TOP + i as i32 * ROW;
    if i % 2 == 1 {
        rect(area, (0, y), (LEFT - 4, y + ROW), RGBColor(245, 245, 245))?;
    }
    let group = match m.group {
        Group::Pipe => "pipe",
        Group::Schbench => "sch",
        Group::App => "app",
        Group::Switch => "switch",
        Group::SysTime => "sys",
    };
    let ty = y + ROW / 2;
    text_mid(area, 6, ty, group, LARGE, BLACK)?;
    text_mid(area, 56, ty, &m.key, LARGE, BLACK)?;
    let value_x = WIDTH - RIGHT_PAD + 10;
    let Some(r) = m.ratio else {
        return text_mid(area, value_x, ty, "FAILED", LARGE, RGBColor(200, 0, 0));
    };
    let (a, b) = (scale.x(1.0).min(scale.x(r)), scale.x(1.0).max(scale.x(r)));
    let color = if r > 1.0 {
        RGBColor(210, 60, 50)
    } else {
        RGBColor(50, 100, 200)
    };
    rect(area, (a, y + 6), (b.max(a + 2), y + ROW - 6), color)?;
    if let (Some(lo), Some(hi)) = (m.ratio_min, m.ratio_max) {
        let (yc, lo, hi) = (y + ROW / 2, scale.x(lo), scale.x(hi));
        line(area, (lo, yc), (hi, yc), BLACK, 1)?;
        line(area, (lo, yc - 5), (lo, yc + 5), BLACK, 1)?;
        line(area, (hi, yc - 5), (hi, yc + 5), BLACK, 1)?;
    }
    text_mid(area, value_x, ty, &format!("{r:.3}"), LARGE, BLACK)
}

/// The legend and the geometric means under the chart.
fn footer(area: &Area, report: &Report, bottom: i32) -> Result<()> {
    let legend = "red: Enoki worse, blue: Enoki better, green band: within 5 %";
    text(area, 10, bottom + 30, legend, SMALL, GREY_TEXT)?;
    let g = |v: Option<f64>| v.map(|g| format!("{g:.3}")).unwrap_or_else(|| "-".into());
    let sum = format!(
        "geomean: applications {}, all {}",
        g(report.summary.geomean_app),
        g(report.summary.geomean_all)
    );
    text(area, 10, bottom + 48, &sum, LARGE, BLACK)
}

/// Horizontal bars of each metric's ratio around 1.0 (red: Enoki worse,
/// blue: better), whiskers for the per-repetition range, the 5 % band
/// shaded, failures marked.
pub fn ratios_png(path: &Path, report: &Report) -> Result<()> {
    let rows: &[MetricSummary] = &report.metrics;
    let bottom = TOP + ROW * rows.len() as i32;
    register_embedded_font()?;
    let area = BitMapBackend::new(path, (WIDTH as u32, (bottom + 90) as u32)).into_drawing_area();
    area.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let scale = Scale::fitting(rows);
    header(&area, report)?;
    grid(&area, &scale, bottom)?;
    for (i, m) in rows.iter().enumerate() {
        row(&area, &scale, i, m)?;
    }
    let one = scale.x(1.0);
    line(&area, (one, TOP - 4), (one, bottom + 4), BLACK, 2)?;
    footer(&area, report, bottom)?;
    area.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}
