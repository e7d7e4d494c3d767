//! `curves.png` of a training run: the loss (and the mean positive and hardest-negative
//! distances) over the steps, and the validation's tentatives and correct matches.
//!
//! Drawn with the shared plotting helper (`crate::plot`), as the evaluation's plots are; the
//! file is replaced atomically, since the curves are redrawn while someone may be looking at them.

use std::path::Path;

use plotters::prelude::*;

use crate::plot::{render, Area, DrawResult, BLUE, FONT, GREEN, GREY, ORANGE};
use crate::train::run::session::LogRow;
use crate::Result;

/// Draws the curves of `rows` (as in `log.csv`) into `path`.
pub fn draw_curves(path: &Path, rows: &[LogRow]) -> Result<()> {
    render(path, 1000, 760, |root| draw(root, rows))
}

fn draw(root: &Area, rows: &[LogRow]) -> DrawResult {
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let train: Vec<(f64, &crate::train::run::session::TrainMeans)> = rows
        .iter()
        .filter_map(|r| Some((r.step as f64, r.train.as_ref()?)))
        .collect();
    let val: Vec<(f64, &crate::train::run::validate::Validation)> = rows
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
            (|t: &crate::train::run::session::TrainMeans| t.loss) as fn(&_) -> f64,
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
            (|v: &crate::train::run::validate::Validation| v.tentatives) as fn(&_) -> usize,
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
