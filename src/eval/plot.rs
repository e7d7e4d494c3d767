//! The evaluation's plots, as PNG: registered pairs per dataset and method (grouped bars),
//! inliers per pair and time per pair (one panel per dataset, one colour per method).
//!
//! Drawn with the shared plotting helper (`crate::plot`): plotters into an in-memory RGB
//! buffer with the embedded DejaVu font, saved as PNG with `image`.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use super::record::{EvalFile, PairRecord};
use crate::plot::{colour, render, Area, DrawResult, FONT};
use crate::{Error, Result};

/// Height of the title and legend strip.
const HEADER: u32 = 92;

/// Draws the figure's title and a legend of the methods' colours in a strip at the top, and
/// returns the area below it. One legend per figure keeps it off the data.
fn header<'a>(
    area: &Area<'a>,
    title: &str,
    note: &str,
    methods: &[String],
    marker_is_bar: bool,
) -> std::result::Result<Area<'a>, Box<dyn StdError>> {
    let (top, rest) = area.split_vertically(HEADER);
    top.draw(&Text::new(
        title.to_string(),
        (16, 8),
        (FONT, 24).into_font().color(&BLACK),
    ))?;
    let mut x = 16;
    for (j, name) in methods.iter().enumerate() {
        let c = colour(j);
        if marker_is_bar {
            top.draw(&Rectangle::new([(x, 64), (x + 16, 78)], c.filled()))?;
        } else {
            top.draw(&Circle::new((x + 8, 71), 6, c.filled()))?;
        }
        top.draw(&Text::new(
            name.clone(),
            (x + 24, 66),
            (FONT, 16).into_font().color(&BLACK),
        ))?;
        x += 24 + 10 * name.chars().count() as i32 + 28;
    }
    top.draw(&Text::new(
        note.to_string(),
        (16, 40),
        (FONT, 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    Ok(rest)
}

/// Writes `registered.png`, `inliers.png` and `time.png` into `dir`.
pub fn write_plots(dir: &Path, file: &EvalFile) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    let path = dir.join("registered.png");
    let datasets = file.settings.datasets.len();
    let methods = file.settings.methods.len();
    let width = (240 + datasets * methods.max(2) * 80).clamp(800, 2400) as u32;
    render(&path, width, 620, |area| registered(area, file))?;
    written.push(path);

    let panels = per_dataset_pairs(file);
    let most = panels.iter().map(|(_, p)| p.len()).max().unwrap_or(1);
    let width = (160 + most * 28).clamp(900, 3200) as u32;
    let height = (HEADER as usize + panels.len().max(1) * 340) as u32;
    for kind in [Panel::Inliers, Panel::Time] {
        let path = dir.join(kind.file());
        render(&path, width, height, |area| {
            per_pair(area, file, &panels, kind)
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Grouped bars: for each dataset, one bar per method up to its registered pairs, outlined up
/// to the dataset's pairs, labelled "registered/pairs".
fn registered(area: &Area, file: &EvalFile) -> DrawResult {
    area.fill(&WHITE)?;
    let labels: Vec<String> = file
        .settings
        .methods
        .iter()
        .map(|m| m.label.clone())
        .collect();
    let area = header(
        area,
        "Registered pairs per dataset",
        "pale bar: all pairs of the dataset",
        &labels,
        true,
    )?;
    let names: Vec<String> = file
        .settings
        .datasets
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let n = names.len().max(1);
    let m = file.settings.methods.len().max(1);
    let most = file
        .summary
        .iter()
        .map(|s| s.pairs)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let top = most * 1.2;
    let mut chart = ChartBuilder::on(&area)
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)?;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .label_style((FONT, 16))
        .x_labels(n)
        .x_label_formatter(&label)
        .y_label_formatter(&integer)
        .light_line_style(WHITE)
        .y_desc("registered pairs")
        .axis_desc_style((FONT, 16))
        .draw()?;
    let width = 0.8 / m as f64;
    for (j, method) in file.settings.methods.iter().enumerate() {
        let c = colour(j);
        let cells: Vec<(f64, usize, usize)> = file
            .settings
            .datasets
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let s = file
                    .summary
                    .iter()
                    .find(|s| s.method == method.label && s.dataset == d.name)?;
                let x0 = i as f64 - 0.4 + j as f64 * width;
                Some((x0, s.registered, s.pairs))
            })
            .collect();
        let gap = width * 0.06;
        chart.draw_series(cells.iter().map(|&(x0, _, pairs)| {
            Rectangle::new(
                [(x0 + gap, 0.0), (x0 + width - gap, pairs as f64)],
                c.mix(0.15).filled(),
            )
        }))?;
        chart.draw_series(cells.iter().map(|&(x0, registered, _)| {
            Rectangle::new(
                [(x0 + gap, 0.0), (x0 + width - gap, registered as f64)],
                c.filled(),
            )
        }))?;
        let size = if m > 3 { 13 } else { 15 };
        chart.draw_series(cells.iter().map(|&(x0, registered, pairs)| {
            Text::new(
                format!("{registered}/{pairs}"),
                (x0 + width / 2.0, pairs as f64 + top * 0.01),
                (FONT, size)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    Ok(())
}

/// Axis labels on whole numbers only.
fn integer(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Panel {
    Inliers,
    Time,
}

impl Panel {
    fn file(self) -> &'static str {
        match self {
            Panel::Inliers => "inliers.png",
            Panel::Time => "time.png",
        }
    }
}

/// For each dataset: its pairs in order (index, short name).
fn per_dataset_pairs(file: &EvalFile) -> Vec<(String, Vec<(usize, String)>)> {
    file.settings
        .datasets
        .iter()
        .map(|d| {
            let mut pairs: BTreeMap<usize, String> = BTreeMap::new();
            for r in file.pairs.iter().filter(|r| r.dataset == d.name) {
                let short = r
                    .pair
                    .strip_prefix(&format!("{}/", d.name))
                    .unwrap_or(&r.pair);
                pairs.insert(r.index, short.to_string());
            }
            (d.name.clone(), pairs.into_iter().collect())
        })
        .collect()
}

/// One panel per dataset, pairs along x; inliers on a log axis (filled: registered, hollow:
/// not registered, ×: failed) with the 15-inlier line, or seconds per pair with each method's
/// median as a line.
fn per_pair(
    area: &Area,
    file: &EvalFile,
    panels: &[(String, Vec<(usize, String)>)],
    kind: Panel,
) -> DrawResult {
    area.fill(&WHITE)?;
    let methods = &file.settings.methods;
    let labels: Vec<String> = methods.iter().map(|m| m.label.clone()).collect();
    let (title, note) = match kind {
        Panel::Inliers => (
            "Inliers per pair",
            "log scale · filled: registered, hollow: not registered, red x: failed · grey line: 15 inliers",
        ),
        Panel::Time => (
            "Seconds per pair",
            "the whole match of both images · line: each method's median",
        ),
    };
    let area = header(area, title, note, &labels, false)?;
    if panels.is_empty() {
        return Ok(());
    }
    let areas = area.split_evenly((panels.len(), 1));
    let m = methods.len().max(1);
    let min_inliers = methods
        .first()
        .map(|c| c.homography.min_inliers)
        .unwrap_or(15) as f64;
    for (panel, (dataset, pairs)) in areas.iter().zip(panels) {
        let k = pairs.len().max(1);
        let position: BTreeMap<usize, usize> = pairs
            .iter()
            .enumerate()
            .map(|(x, (i, _))| (*i, x))
            .collect();
        let records: Vec<&PairRecord> = file
            .pairs
            .iter()
            .filter(|r| &r.dataset == dataset)
            .collect();
        let value = |r: &PairRecord| match kind {
            Panel::Inliers => (r.inliers as f64).max(1.0),
            Panel::Time => r.timings_ms.get("total").copied().unwrap_or(0.0) / 1e3,
        };
        let most = records
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| value(r))
            .fold(0.0f64, f64::max);
        let longest = pairs
            .iter()
            .map(|(_, s)| s.chars().count())
            .max()
            .unwrap_or(4);
        let label_area = (longest * 8 + 16) as u32;
        let offset = |j: usize| (j as f64 - (m as f64 - 1.0) / 2.0) * (0.6 / m as f64).min(0.2);
        // Pair names are drawn by `pair_labels` (plotters centres rotated axis labels on the
        // axis line); the mesh keeps only the ticks.
        let label = |_: &f64| String::new();
        let x_range = -0.5f64..(k as f64 - 0.5);
        match kind {
            Panel::Inliers => {
                let top = (most.max(min_inliers) * 2.0).max(20.0);
                let mut chart = ChartBuilder::on(panel)
                    .caption(dataset, (FONT, 20))
                    .margin(10)
                    .x_label_area_size(label_area)
                    .y_label_area_size(64)
                    .build_cartesian_2d(x_range, (0.8f64..top).log_scale())?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .label_style((FONT, 14))
                    .x_labels(k)
                    .x_label_formatter(&label)
                    .y_label_formatter(&|v| format!("{v:.0}"))
                    .light_line_style(WHITE)
                    .y_desc("inliers")
                    .axis_desc_style((FONT, 15))
                    .draw()?;
                let ticks = (0..pairs.len()).map(|x| chart.backend_coord(&(x as f64, 0.8)));
                pair_labels(panel, ticks.collect(), pairs)?;
                chart.draw_series(LineSeries::new(
                    [(-0.5, min_inliers), (k as f64 - 0.5, min_inliers)],
                    BLACK.mix(0.35).stroke_width(1),
                ))?;
                for (j, method) in methods.iter().enumerate() {
                    let c = colour(j);
                    let mine: Vec<(f64, &PairRecord)> = records
                        .iter()
                        .filter(|r| r.method == method.label)
                        .filter_map(|r| Some((*position.get(&r.index)? as f64 + offset(j), *r)))
                        .collect();
                    chart.draw_series(mine.iter().filter(|(_, r)| r.error.is_none()).map(
                        |&(x, r)| {
                            let style = if r.registered {
                                c.filled()
                            } else {
                                c.stroke_width(2)
                            };
                            Circle::new((x, value(r)), 4, style)
                        },
                    ))?;
                    chart.draw_series(
                        mine.iter()
                            .filter(|(_, r)| r.error.is_some())
                            .map(|&(x, _)| Cross::new((x, 1.0), 5, RED.stroke_width(2))),
                    )?;
                }
            }
            Panel::Time => {
                let top = (most * 1.15).max(0.1);
                let mut chart = ChartBuilder::on(panel)
                    .caption(dataset, (FONT, 20))
                    .margin(10)
                    .x_label_area_size(label_area)
                    .y_label_area_size(64)
                    .build_cartesian_2d(x_range, 0f64..top)?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .label_style((FONT, 14))
                    .x_labels(k)
                    .x_label_formatter(&label)
                    .y_label_formatter(&|v| format!("{v:.1}"))
                    .light_line_style(WHITE)
                    .y_desc("seconds")
                    .axis_desc_style((FONT, 15))
                    .draw()?;
                let ticks = (0..pairs.len()).map(|x| chart.backend_coord(&(x as f64, 0.0)));
                pair_labels(panel, ticks.collect(), pairs)?;
                for (j, method) in methods.iter().enumerate() {
                    let c = colour(j);
                    let mine: Vec<(f64, f64)> = records
                        .iter()
                        .filter(|r| r.method == method.label && r.error.is_none())
                        .filter_map(|r| {
                            Some((*position.get(&r.index)? as f64 + offset(j), value(r)))
                        })
                        .collect();
                    chart.draw_series(mine.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
                    if let Some(median) = super::report::median(mine.iter().map(|p| p.1).collect())
                    {
                        chart.draw_series(LineSeries::new(
                            [(-0.5, median), (k as f64 - 0.5, median)],
                            c.mix(0.6).stroke_width(1),
                        ))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Writes each pair's name downwards from below its tick (`ticks`: the ticks' pixels).
fn pair_labels(panel: &Area, ticks: Vec<(i32, i32)>, pairs: &[(usize, String)]) -> DrawResult {
    let (bx, by) = panel.get_base_pixel();
    let style = (FONT, 13)
        .into_font()
        .transform(FontTransform::Rotate90)
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for ((px, py), (_, name)) in ticks.into_iter().zip(pairs) {
        panel.draw(&Text::new(
            name.clone(),
            (px - bx, py - by + 8),
            style.clone(),
        ))?;
    }
    Ok(())
}
