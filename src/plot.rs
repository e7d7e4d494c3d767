//! Plots as PNG, for the evaluation's plots (`eval::plot`) and the training curves
//! (`train::run::curves`).
//!
//! plotters draws into an in-memory RGB buffer, with the embedded DejaVu font registered for its
//! `ab_glyph` text, and `image` encodes the PNG: no system font, fontconfig or second `image`
//! version is needed (see the shared `rust-stack.md` §4). The file is replaced atomically, so a
//! plot redrawn while someone looks at it is never seen half written.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::files::write_atomically;
use crate::{Error, Result};

/// The drawing area of a plot being rendered.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// What drawing returns: plotters' errors are boxed, and turned into one line by [`render`].
pub type DrawResult = std::result::Result<(), Box<dyn StdError>>;

/// The font family name every plot's text uses (the embedded DejaVu font).
pub const FONT: &str = "sans-serif";

/// Colour-blind-safe colours (Okabe–Ito): the methods of the evaluation's plots take them in
/// turn (see [`colour`]).
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
];
/// The palette's blue.
pub const BLUE: RGBColor = PALETTE[0];
/// The palette's orange.
pub const ORANGE: RGBColor = PALETTE[1];
/// The palette's bluish green.
pub const GREEN: RGBColor = PALETTE[2];
/// The palette's grey.
pub const GREY: RGBColor = PALETTE[6];

/// The `i`-th colour of [`PALETTE`], starting again after the last.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Registers the embedded font with plotters, once per process.
fn font_ready() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, crate::viz::FONT_BYTES).is_ok());
    ok.then_some(())
        .ok_or_else(|| Error::invalid("the embedded font cannot be registered for plots"))
}

/// Runs `draw` on a white `width` × `height` canvas and saves it to `path` as PNG (atomically).
/// A failure to draw or to write is one line naming `path`.
pub fn render(
    path: &Path,
    width: u32,
    height: u32,
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<()> {
    font_ready()?;
    let mut buffer = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        draw(&root)
            .and_then(|_| root.present().map_err(Into::into))
            .map_err(|e| {
                Error::invalid(format!("{}: cannot draw the plot: {e}", path.display()))
            })?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer)
        .ok_or_else(|| Error::invalid("plot buffer of the wrong size"))?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::image(path, format!("cannot encode the plot as PNG: {e}")))?;
    write_atomically(path, &png)
}
