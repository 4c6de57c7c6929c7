//! The peer benchmark's picture: peak RSS against file size per transfer kind,
//! and proxy CPU per GiB by transfer kind, one PNG.
//!
//! ```text
//!   +---------------------+---------------------+
//!   | RSS vs size: PUT    | RSS vs size: POST   |   lines: one per proxy,
//!   +---------------------+---------------------+   log2 size axis
//!   | RSS vs size: GET    | CPU s/GiB by kind   |   bars: one per proxy
//!   +---------------------+---------------------+
//! ```
//! plotters draws into a bitmap and encodes PNG itself; text goes through
//! ab_glyph with a TTF read at run time, so nothing links fontconfig.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

/// One proxy's (file size MiB, value) points; drawn on a log2 size axis.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
}

/// Grouped bars: `values[series][group]`.
pub struct Bars {
    pub title: String,
    pub groups: Vec<String>,
    pub series: Vec<(String, Vec<Option<f64>>)>,
}

pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Proxies keep their colour in every panel.
fn colour(name: &str) -> RGBColor {
    match name {
        "sluice" => RGBColor(31, 119, 180),
        "sluice sha256" => RGBColor(23, 190, 207),
        "nginx" => RGBColor(44, 160, 44),
        "haproxy" => RGBColor(214, 39, 40),
        _ => RGBColor(127, 127, 127),
    }
}

pub fn register_font(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "font {} (apt-get install fonts-dejavu-core, or --font PATH)",
            path.display()
        )
    })?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{}: not a usable TTF", path.display()))
}

pub fn draw(path: &Path, rss: &[Panel], cpu: &Bars) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1600, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((2, 2));
    for (area, panel) in areas.iter().zip(rss) {
        rss_panel(area, panel).map_err(|e| anyhow!("{}: {e}", panel.title))?;
    }
    if let Some(area) = areas.get(3) {
        bars_panel(area, cpu).map_err(|e| anyhow!("{}: {e}", cpu.title))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn rss_panel(area: &Area<'_>, p: &Panel) -> DrawResult {
    // x is log2 of the size in MiB on a linear axis, so the ticks fall on 64M, 128M, ...
    let xs = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|q| q.0.log2()));
    let (lo, hi) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = if lo > hi {
        (0.0, 1.0)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let ymax = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|q| q.1))
        .fold(1.0f64, f64::max)
        * 1.25;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(lo..hi, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("file size")
        .y_desc("peak RSS, MiB (VmHWM)")
        .x_labels(((hi - lo) as usize + 1).max(2))
        .x_label_formatter(&|x| {
            let mib = x.exp2();
            match () {
                _ if (x - x.round()).abs() > 1e-6 => String::new(),
                _ if mib >= 1024.0 => format!("{:.0} GiB", mib / 1024.0),
                _ => format!("{mib:.0} MiB"),
            }
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    for l in &p.lines {
        let c = colour(&l.name);
        chart
            .draw_series(LineSeries::new(
                l.points.iter().map(|&(x, y)| (x.log2(), y)),
                c.stroke_width(3),
            ))?
            .label(l.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart.draw_series(
            l.points
                .iter()
                .map(|&(x, y)| Circle::new((x.log2(), y), 5, c.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    Ok(())
}

fn bars_panel(area: &Area<'_>, b: &Bars) -> DrawResult {
    let n = b.groups.len().max(1);
    let ymax = b
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .fold(0.1f64, f64::max)
        * 1.25;
    // Integer x (100 per group): f64 axes with chosen key points have no label formatter.
    let n = n as u32;
    let keys: Vec<u32> = (0..n).map(|i| i * 100 + 50).collect();
    let groups = b.groups.clone();
    let mut chart = ChartBuilder::on(area)
        .caption(&b.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((0u32..n * 100).with_key_points(keys), 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("proxy CPU s per GiB (user + system)")
        .x_label_formatter(&|x| groups.get((*x / 100) as usize).cloned().unwrap_or_default())
        .label_style(("sans-serif", 15))
        .draw()?;
    let width = 80 / b.series.len().max(1) as u32;
    for (j, (name, values)) in b.series.iter().enumerate() {
        let c = colour(name);
        let x0 = |i: usize| i as u32 * 100 + 10 + j as u32 * width;
        chart
            .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                v.map(|v| Rectangle::new([(x0(i), 0.0), (x0(i) + width - 2, v)], c.filled()))
            }))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    Ok(())
}
