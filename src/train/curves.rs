//! `curves.png` of a training run: the loss (and the mean positive and hardest-negative
//! distances) over the steps, and the validation's tentatives and correct matches.
//!
//! Drawn as the evaluation's plots are (`eval/plot.rs`): plotters into an RGB buffer with the
//! embedded DejaVu font registered, saved with `image`; no system font is needed.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::session::LogRow;
use crate::{Error, Result};

const FONT: &str = "sans-serif";
const BLUE: RGBColor = RGBColor(0, 114, 178);
const ORANGE: RGBColor = RGBColor(230, 159, 0);
const GREEN: RGBColor = RGBColor(0, 158, 115);
const GREY: RGBColor = RGBColor(120, 120, 120);

fn font_ready() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, crate::viz::FONT_BYTES).is_ok());
    ok.then_some(())
        .ok_or_else(|| Error::invalid("the embedded font cannot be registered for plots"))
}

/// Draws the curves of `rows` (as in `log.csv`) into `path`.
pub fn draw_curves(path: &Path, rows: &[LogRow]) -> Result<()> {
    font_ready()?;
    let (w, h) = (1000u32, 760u32);
    let mut buffer = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        draw(&root, rows)
            .and_then(|_| root.present().map_err(Into::into))
            .map_err(|e| {
                Error::invalid(format!("{}: cannot draw the curves: {e}", path.display()))
            })?;
    }
    let image = image::RgbImage::from_raw(w, h, buffer)
        .ok_or_else(|| Error::invalid("plot buffer of the wrong size"))?;
    // Through a temporary file: the curves are redrawn while someone may be looking at them.
    let tmp = path.with_extension(format!("{}.partial.png", std::process::id()));
    image
        .save(&tmp)
        .map_err(|e| Error::image(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

type DrawResult = std::result::Result<(), Box<dyn StdError>>;

fn draw(root: &DrawingArea<BitMapBackend, plotters::coord::Shift>, rows: &[LogRow]) -> DrawResult {
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let train: Vec<(f64, &super::session::TrainMeans)> = rows
        .iter()
        .filter_map(|r| Some((r.step as f64, r.train.as_ref()?)))
        .collect();
    let val: Vec<(f64, &super::validate::Validation)> = rows
        .iter()
        .filter_map(|r| Some((r.step as f64, r.validation.as_ref()?)))
        .collect();
    let last = rows.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;

    let loss_top = train
        .iter()
        .flat_map(|(_, t)| {
            [
                t.loss,
                t.mean_positive as f64,
                t.mean_hardest_negative as f64,
            ]
        })
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let mut chart = ChartBuilder::on(&top)
        .caption("training loss (means per log row)", (FONT, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..last, 0f64..loss_top)?;
    chart
        .configure_mesh()
        .label_style((FONT, 13))
        .x_desc("step")
        .draw()?;
    for (name, colour, get) in [
        (
            "loss",
            BLUE,
            (|t: &super::session::TrainMeans| t.loss) as fn(&_) -> f64,
        ),
        ("positive distance", GREEN, |t| t.mean_positive as f64),
        ("hardest negative", ORANGE, |t| {
            t.mean_hardest_negative as f64
        }),
    ] {
        chart
            .draw_series(LineSeries::new(
                train.iter().map(|(s, t)| (*s, get(t))),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(GREY)
        .draw()?;

    let val_top = val
        .iter()
        .map(|(_, v)| v.tentatives as f64)
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "validation (HesAffNet, ratio 0.8; correct: within 6 px)",
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..last, 0f64..val_top)?;
    chart
        .configure_mesh()
        .label_style((FONT, 13))
        .x_desc("step")
        .draw()?;
    for (name, colour, get) in [
        (
            "tentatives",
            GREY,
            (|v: &super::validate::Validation| v.tentatives) as fn(&_) -> usize,
        ),
        ("correct", BLUE, |v| v.correct),
        ("inliers", GREEN, |v| v.inliers),
    ] {
        let points: Vec<(f64, f64)> = val.iter().map(|(s, v)| (*s, get(v) as f64)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(GREY)
        .draw()?;
    Ok(())
}
