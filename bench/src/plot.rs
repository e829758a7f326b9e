// SPDX-License-Identifier: MIT OR Apache-2.0
//! The ratio chart (PNG), drawn with plotters' bitmap backend and no system
//! fonts: text is rendered from the public-domain 8x8 bitmap font of the
//! `font8x8` crate, pixel by pixel, so it works on machines without fonts.

use std::path::Path;

use anyhow::{anyhow, Result};
use font8x8::UnicodeFonts;
use plotters::prelude::*;

use crate::report::{MetricSummary, Report};
use crate::workloads::Group;

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

const ROW: i32 = 28;
const LEFT: i32 = 370;
const RIGHT_PAD: i32 = 150;
const TOP: i32 = 70;
const WIDTH: i32 = 1140;

/// Draws `text` at (x, y) (top-left), `scale` pixels per font pixel.
fn text(area: &Area, x: i32, y: i32, s: &str, scale: i32, color: RGBColor) -> Result<()> {
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        let x0 = x + i as i32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (px, py) = (x0 + col * scale, y + row as i32 * scale);
                    area.draw(&Rectangle::new(
                        [(px, py), (px + scale, py + scale)],
                        color.filled(),
                    ))
                    .map_err(|e| anyhow!("drawing text: {e:?}"))?;
                }
            }
        }
    }
    Ok(())
}

fn text_width(s: &str, scale: i32) -> i32 {
    s.chars().count() as i32 * 8 * scale
}

fn rect(area: &Area, a: (i32, i32), b: (i32, i32), color: RGBColor) -> Result<()> {
    area.draw(&Rectangle::new([a, b], color.filled()))
        .map_err(|e| anyhow!("drawing: {e:?}"))
}

fn line(area: &Area, a: (i32, i32), b: (i32, i32), color: RGBColor, width: u32) -> Result<()> {
    area.draw(&PathElement::new(vec![a, b], color.stroke_width(width)))
        .map_err(|e| anyhow!("drawing: {e:?}"))
}

/// Horizontal bars of each metric's ratio around 1.0 (red: Enoki worse,
/// blue: better), whiskers for the per-repetition range, the 5 % band
/// shaded, failures marked.
pub fn ratios_png(path: &Path, report: &Report) -> Result<()> {
    let rows: &[MetricSummary] = &report.metrics;
    let height = TOP + ROW * rows.len() as i32 + 90;
    let area = BitMapBackend::new(path, (WIDTH as u32, height as u32)).into_drawing_area();
    area.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;

    // Scale: at least 0.9..1.1, widened to fit every value, in steps of 0.05.
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
    lo = (lo / step).floor() * step;
    hi = (hi / step).ceil() * step;
    let plot_w = (WIDTH - LEFT - RIGHT_PAD) as f64;
    let x_of = |v: f64| LEFT + ((v - lo) / (hi - lo) * plot_w).round() as i32;
    let bottom = TOP + ROW * rows.len() as i32;

    let title = format!(
        "Enoki {} / default scheduler: cost ratio (>1 = Enoki worse)",
        report.meta.scheduler
    );
    text(&area, 10, 12, &title, 2, BLACK)?;
    let sub = format!(
        "{} reps, {}; bars: ratio of medians, whiskers: per-rep range",
        report.meta.reps, report.meta.vm
    );
    text(&area, 10, 40, &sub, 1, RGBColor(80, 80, 80))?;

    // Target band 1.00-1.05 and grid.
    rect(
        &area,
        (x_of(1.0), TOP),
        (x_of(1.05), bottom),
        RGBColor(225, 245, 225),
    )?;
    let mut v = lo;
    while v <= hi + 1e-9 {
        let x = x_of(v);
        line(&area, (x, TOP), (x, bottom), RGBColor(220, 220, 220), 1)?;
        let label = format!("{v:.2}");
        text(
            &area,
            x - text_width(&label, 1) / 2,
            bottom + 6,
            &label,
            1,
            BLACK,
        )?;
        v += step;
    }

    for (i, m) in rows.iter().enumerate() {
        let y = TOP + i as i32 * ROW;
        if i % 2 == 1 {
            rect(&area, (0, y), (LEFT - 4, y + ROW), RGBColor(245, 245, 245))?;
        }
        let group = match m.group {
            Group::Pipe => "pipe",
            Group::Schbench => "sch",
            Group::App => "app",
        };
        let label = format!("{:<4} {}", group, m.key);
        text(&area, 6, y + (ROW - 16) / 2, &label, 2, BLACK)?;
        match m.ratio {
            Some(r) => {
                let (a, b) = (x_of(1.0).min(x_of(r)), x_of(1.0).max(x_of(r)));
                let color = if r > 1.0 {
                    RGBColor(210, 60, 50)
                } else {
                    RGBColor(50, 100, 200)
                };
                rect(&area, (a, y + 6), (b.max(a + 2), y + ROW - 6), color)?;
                if let (Some(lo_r), Some(hi_r)) = (m.ratio_min, m.ratio_max) {
                    let yc = y + ROW / 2;
                    line(&area, (x_of(lo_r), yc), (x_of(hi_r), yc), BLACK, 1)?;
                    line(&area, (x_of(lo_r), yc - 5), (x_of(lo_r), yc + 5), BLACK, 1)?;
                    line(&area, (x_of(hi_r), yc - 5), (x_of(hi_r), yc + 5), BLACK, 1)?;
                }
                text(
                    &area,
                    WIDTH - RIGHT_PAD + 10,
                    y + (ROW - 16) / 2,
                    &format!("{r:.3}"),
                    2,
                    BLACK,
                )?;
            }
            None => text(
                &area,
                WIDTH - RIGHT_PAD + 10,
                y + (ROW - 16) / 2,
                "FAILED",
                2,
                RGBColor(200, 0, 0),
            )?,
        }
    }
    line(
        &area,
        (x_of(1.0), TOP - 4),
        (x_of(1.0), bottom + 4),
        BLACK,
        2,
    )?;
    let legend = "red: Enoki worse, blue: Enoki better, green band: within 5 %";
    text(&area, 10, bottom + 30, legend, 1, RGBColor(80, 80, 80))?;
    let g = |v: Option<f64>| v.map(|g| format!("{g:.3}")).unwrap_or_else(|| "-".into());
    let sum = format!(
        "geomean: applications {}, all {}",
        g(report.summary.geomean_app),
        g(report.summary.geomean_all)
    );
    text(&area, 10, bottom + 48, &sum, 2, BLACK)?;
    area.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}
