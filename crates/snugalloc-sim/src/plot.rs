//! Plot: the PNG and SVG charts of a run.
//!
//! - `<workload>.png/.svg`: reserved (solid) and requested (thin, dashed)
//!   bytes over time, in MiB against seconds, one colour per allocator; the
//!   y range leaves room above the curves for the legend.
//! - `<workload>-bars.png/.svg`: overhead at the peak (%) and throughput
//!   (million operations per second) per allocator.
//!
//! Text needs a TrueType font, loaded at run time: `SNUGALLOC_SIM_FONT` if
//! set, else DejaVu Sans (Debian package `fonts-dejavu-core`) or Liberation
//! Sans from their usual paths. Without one, plots are skipped with a note.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::run::{Sample, Summary};
use crate::units::mib;

/// Where fonts are looked for when `SNUGALLOC_SIM_FONT` is not set.
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const FONT: &str = "sans-serif";

/// Loads and registers the font once; the error says how to get one.
pub fn ensure_font() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let candidates: Vec<String> = match std::env::var("SNUGALLOC_SIM_FONT") {
                Ok(p) => vec![p],
                Err(_) => FONT_PATHS.iter().map(|s| s.to_string()).collect(),
            };
            for path in &candidates {
                if let Ok(bytes) = std::fs::read(path) {
                    // The font lives for the rest of the process.
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    for style in [FontStyle::Normal, FontStyle::Bold] {
                        plotters::style::register_font(FONT, style, bytes)
                            .map_err(|_| format!("{path} is not a usable TrueType font"))?;
                    }
                    return Ok(());
                }
            }
            Err(format!(
                "no font found (tried {}); install fonts-dejavu-core or set SNUGALLOC_SIM_FONT to a .ttf file",
                candidates.join(", ")
            ))
        })
        .clone()
}

/// The palette (Tableau 10): distinct, readable on white.
fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// One allocator's series for the time-series chart.
pub struct Series {
    /// Allocator label.
    pub label: String,
    /// Its samples.
    pub samples: Vec<Sample>,
    /// Whether it is a region allocator (else a process allocator).
    pub in_region: bool,
}

/// At most about `max` points of a series: the samples in groups of equal
/// length, each drawn as its highest reserved and requested bytes (at the
/// group's first time), so that no peak the table reports goes missing
/// from the plot; the last sample is always kept.
fn thin(samples: &[Sample], max: usize) -> Vec<Sample> {
    if samples.len() <= max {
        return samples.to_vec();
    }
    let step = samples.len().div_ceil(max);
    let mut v: Vec<Sample> = samples
        .chunks(step)
        .map(|group| Sample {
            t_s: group[0].t_s,
            requested_bytes: group.iter().map(|s| s.requested_bytes).max().unwrap_or(0),
            reserved_bytes: group.iter().map(|s| s.reserved_bytes).max().unwrap_or(0),
            ops_per_s: group.iter().map(|s| s.ops_per_s).sum::<f64>() / group.len() as f64,
        })
        .collect();
    if let Some(last) = samples.last() {
        v.push(*last);
    }
    v
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_series<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    heap_bytes: Option<usize>,
    runs: &[Series],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 26))?;
    let t_max = runs
        .iter()
        .filter_map(|r| r.samples.last())
        .map(|s| s.t_s)
        .fold(1.0, f64::max);
    let region: Vec<(usize, &Series)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.in_region)
        .collect();
    let process: Vec<(usize, &Series)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.in_region)
        .collect();
    match (region.is_empty(), process.is_empty()) {
        (false, false) => {
            let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 / 2);
            let heap = heap_bytes.map_or(String::new(), |h| format!(" ({:.0} MiB)", mib(h as f64)));
            draw_panel(
                &top,
                &format!("region allocators, in the fixed heap{heap}"),
                heap_bytes,
                t_max,
                &region,
            )?;
            draw_panel(
                &bottom,
                "process allocators, resident memory growth",
                None,
                t_max,
                &process,
            )?;
        }
        (false, true) => draw_panel(&root, "", heap_bytes, t_max, &region)?,
        _ => draw_panel(&root, "", None, t_max, &process)?,
    }
    root.present()?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    heap_bytes: Option<usize>,
    t_max: f64,
    runs: &[(usize, &Series)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let y_max = runs
        .iter()
        .flat_map(|(_, r)| r.samples.iter())
        .map(|s| mib(s.reserved_bytes.max(s.requested_bytes) as f64))
        .fold(heap_bytes.map_or(1.0, |h| mib(h as f64)), f64::max)
        * (1.15 + 0.05 * (runs.len() + 1) as f64);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(70);
    if !caption.is_empty() {
        builder.caption(caption, (FONT, 19));
    }
    let mut chart = builder.build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("MiB  (solid: reserved, dashed: requested)")
        .x_label_formatter(&|x| {
            if t_max >= 10.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    if let Some(h) = heap_bytes {
        let line = BLACK;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, mib(h as f64)), (t_max, mib(h as f64))],
                12,
                8,
                line.stroke_width(2),
            ))?
            .label(format!("heap size ({:.0} MiB)", mib(h as f64)))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], line.stroke_width(2))
            });
    }
    for (i, r) in runs {
        let c = colour(*i);
        let pts = thin(&r.samples, 4000);
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|s| (s.t_s, mib(s.reserved_bytes as f64))),
                c.stroke_width(3),
            ))?
            .label(r.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart.draw_series(DashedLineSeries::new(
            pts.iter().map(|s| (s.t_s, mib(s.requested_bytes as f64))),
            6,
            4,
            c.stroke_width(1),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// Bar charts side by side for a few allocators, one above the other for
/// more (so each label has room).
const BARS_SIDE_BY_SIDE: usize = 5;

/// The bar chart's size for `rows` allocators.
fn bars_size(rows: usize) -> (u32, u32) {
    if rows > BARS_SIDE_BY_SIDE {
        (1400, 1100)
    } else {
        (1400, 600)
    }
}

fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    rows: &[Summary],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 24))?;
    let (first, second) = if rows.len() > BARS_SIDE_BY_SIDE {
        root.split_vertically(root.dim_in_pixel().1 / 2)
    } else {
        root.split_horizontally(root.dim_in_pixel().0 / 2)
    };
    // One bar: the allocator's index (its colour), label and value.
    type Bar = (usize, String, f64);
    let panel = |area: &DrawingArea<DB, Shift>,
                 desc: &str,
                 bars: Vec<Bar>,
                 fmt: &dyn Fn(f64) -> String|
     -> DrawResult {
        let n = bars.len().max(1) as f64;
        let finite: Vec<f64> = bars.iter().map(|b| b.2).filter(|v| v.is_finite()).collect();
        let hi = finite.iter().copied().fold(0.0, f64::max);
        let lo = finite.iter().copied().fold(0.0, f64::min);
        let pad = (hi - lo).max(1e-9) * 0.15;
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(60)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n, (lo - if lo < 0.0 { pad } else { 0.0 })..(hi + pad))?;
        let names: Vec<String> = bars.iter().map(|b| b.1.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len().max(1) * 2 + 1)
            .x_label_formatter(&move |x: &f64| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(desc)
            .y_label_formatter(&|y| {
                if y.abs() >= 10.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()?;
        for (slot, (index, _, v)) in bars.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let x0 = slot as f64 + 0.2;
            let x1 = slot as f64 + 0.8;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, *v)],
                colour(*index).filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                fmt(*v),
                (
                    x0,
                    if *v >= 0.0 {
                        *v + pad * 0.25
                    } else {
                        *v - pad * 0.1
                    },
                ),
                (FONT, 15),
            )))?;
        }
        Ok(())
    };
    // Overhead is bytes taken from the region for the region allocators
    // (those with an exact peak) but resident memory of a whole process for
    // the others: not comparable, so when both kinds ran only the region
    // allocators are in the overhead panel.
    let in_region = |r: &Summary| r.exact_peak_reserved_bytes.is_some();
    let mixed = rows.iter().any(in_region) && !rows.iter().all(in_region);
    let overhead: Vec<Bar> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| !mixed || in_region(r))
        .map(|(i, r)| (i, r.alloc.clone(), r.overhead * 100.0))
        .collect();
    panel(
        &first,
        if mixed {
            "overhead at peak (%), region allocators"
        } else {
            "overhead at peak (%)"
        },
        overhead,
        &|v| format!("{v:.1}%"),
    )?;
    panel(
        &second,
        "throughput (million ops/s)",
        rows.iter()
            .enumerate()
            .map(|(i, r)| (i, r.alloc.clone(), r.ops_per_s / 1e6))
            .collect(),
        &|v| format!("{v:.2}"),
    )?;
    root.present()?;
    Ok(())
}

/// Draws into an RGB buffer and writes it to `path` as a PNG (with the
/// `png` crate: plotters' own encoder pulls in the whole `image` crate,
/// which doubled the simulator's build time).
fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw(BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area()).map_err(|e| fail(&e))?;
    let file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), size.0, size.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    writer.write_image_data(&rgb).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))
}

/// Writes `<stem>.png` and `<stem>.svg` of reserved and requested bytes.
pub fn time_series(
    stem: &Path,
    title: &str,
    heap_bytes: Option<usize>,
    runs: &[Series],
) -> Result<Vec<String>, String> {
    ensure_font()?;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let both = runs.iter().any(|r| r.in_region) && runs.iter().any(|r| !r.in_region);
    let size = if both { (1400, 1100) } else { (1400, 800) };
    write_png(&png, size, |area| {
        draw_series(area, title, heap_bytes, runs)
    })?;
    draw_series(
        SVGBackend::new(&svg, size).into_drawing_area(),
        title,
        heap_bytes,
        runs,
    )
    .map_err(|e| format!("drawing {}: {e}", svg.display()))?;
    Ok(vec![png.display().to_string(), svg.display().to_string()])
}

/// Writes `<stem>.png` and `<stem>.svg` of overhead and throughput bars.
pub fn bars(stem: &Path, title: &str, rows: &[Summary]) -> Result<Vec<String>, String> {
    ensure_font()?;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let size = bars_size(rows.len());
    write_png(&png, size, |area| draw_bars(area, title, rows))?;
    draw_bars(SVGBackend::new(&svg, size).into_drawing_area(), title, rows)
        .map_err(|e| format!("drawing {}: {e}", svg.display()))?;
    Ok(vec![png.display().to_string(), svg.display().to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long run's plot draws every peak: one spike among 36,001 samples
    /// (an hour at 10 per second) at an index no stride would hit. Before,
    /// thinning kept every 10th sample and dropped it (found by review).
    #[test]
    fn thinning_keeps_the_peaks() {
        let mut samples: Vec<Sample> = (0..36_001)
            .map(|i| Sample {
                t_s: i as f64 / 10.0,
                requested_bytes: 10,
                reserved_bytes: 20,
                ops_per_s: 1.0,
            })
            .collect();
        samples[12_345].reserved_bytes = 99;
        samples[23_457].requested_bytes = 77;
        let thinned = thin(&samples, 4000);
        assert!(thinned.len() <= 4001 + 1, "{}", thinned.len());
        assert_eq!(thinned.iter().map(|s| s.reserved_bytes).max(), Some(99));
        assert_eq!(thinned.iter().map(|s| s.requested_bytes).max(), Some(77));
        assert_eq!(thinned.last().map(|s| s.t_s), Some(3600.0));
        assert!(thinned.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    }
}
