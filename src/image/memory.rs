//! Images handed over in memory (a caller's pixel buffer, e.g. a numpy array) turned into the
//! internal gray format exactly as [`super::load_gray`] turns the same pixels read from a file.

use std::path::Path;

use ::image::{DynamicImage, ImageBuffer, RgbImage};

use super::{check_usable, to_gray, GrayImage};
use crate::{Error, Result};

/// A row-major pixel buffer with 1 (gray) or 3 (RGB) interleaved values per pixel.
#[derive(Clone, Copy, Debug)]
pub enum Pixels<'a> {
    /// 8-bit values, 0..255.
    U8(&'a [u8]),
    /// 16-bit values, 0..65535 (scaled by 1/257, as 16-bit files are).
    U16(&'a [u16]),
    /// Float values in 0..1 (kornia's and scikit-image's range), scaled by 255.
    F32(&'a [f32]),
}

/// The gray image of `width × height` pixels with `channels` (1 or 3) values each; gray is the
/// mean of R, G and B, as for files. `name` stands for the path in errors ("image 1"). Fails with
/// a one-line [`Error::Image`] when the buffer does not hold `width·height·channels` values, when
/// `channels` is not 1 or 3, when a float value is not finite or outside 0..1, or when a side is
/// below [`super::MIN_SIDE`].
///
/// ```
/// use wbs::image::memory::{gray_from_pixels, Pixels};
///
/// let rgb = vec![30u8, 60, 90].repeat(32 * 24);
/// let gray = gray_from_pixels("photo", 32, 24, 3, Pixels::U8(&rgb))?;
/// assert_eq!((gray.width(), gray.height(), gray.at(5, 5)), (32, 24, 60.0));
/// assert!(gray_from_pixels("photo", 32, 24, 2, Pixels::U8(&rgb)).is_err());
/// # Ok::<(), wbs::Error>(())
/// ```
pub fn gray_from_pixels(
    name: &str,
    width: usize,
    height: usize,
    channels: usize,
    pixels: Pixels,
) -> Result<GrayImage> {
    let path = Path::new(name);
    if channels != 1 && channels != 3 {
        return Err(Error::image(
            path,
            format!("{channels} channels per pixel; wbs takes 1 (gray) or 3 (RGB)"),
        ));
    }
    let len = match pixels {
        Pixels::U8(v) => v.len(),
        Pixels::U16(v) => v.len(),
        Pixels::F32(v) => v.len(),
    };
    if len != width * height * channels {
        return Err(Error::image(
            path,
            format!("{len} values do not make a {width}x{height} image with {channels} channels"),
        ));
    }
    let (w, h) = (width as u32, height as u32);
    let image = match pixels {
        Pixels::U8(v) if channels == 1 => {
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, v.to_vec()).expect("size checked"))
        }
        Pixels::U8(v) => {
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, v.to_vec()).expect("size checked"))
        }
        Pixels::U16(v) if channels == 1 => DynamicImage::ImageLuma16(
            ImageBuffer::from_raw(w, h, v.to_vec()).expect("size checked"),
        ),
        Pixels::U16(v) => {
            DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, v.to_vec()).expect("size checked"))
        }
        Pixels::F32(v) => {
            if let Some(bad) = v.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                return Err(Error::image(
                    path,
                    format!(
                        "float pixel value {bad} is outside 0..1 (float images are taken as 0..1; \
                         pass uint8 for 0..255)"
                    ),
                ));
            }
            let gray = v
                .chunks_exact(channels)
                .map(|p| p.iter().sum::<f32>() * 255.0 / channels as f32)
                .collect();
            let gray = GrayImage::from_vec(width, height, gray);
            check_usable(path, &gray)?;
            return Ok(gray);
        }
    };
    let gray = to_gray(&image);
    check_usable(path, &gray)?;
    Ok(gray)
}

/// The same buffer as 8-bit RGB, for drawing: gray is repeated in the three channels, 16-bit
/// values are scaled by 1/257 and 0..1 floats by 255. Checks as [`gray_from_pixels`] does.
pub fn rgb_from_pixels(
    name: &str,
    width: usize,
    height: usize,
    channels: usize,
    pixels: Pixels,
) -> Result<RgbImage> {
    gray_from_pixels(name, width, height, channels, pixels)?; // the checks, one message each
    let bytes: Vec<u8> = match pixels {
        Pixels::U8(v) => v.to_vec(),
        Pixels::U16(v) => v
            .iter()
            .map(|&x| (x as f32 / 257.0).round() as u8)
            .collect(),
        Pixels::F32(v) => v.iter().map(|&x| (x * 255.0).round() as u8).collect(),
    };
    let rgb = if channels == 3 {
        bytes
    } else {
        bytes.iter().flat_map(|&g| [g, g, g]).collect()
    };
    Ok(RgbImage::from_raw(width as u32, height as u32, rgb).expect("size checked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{load_gray, LoadOptions};

    #[test]
    fn pixels_in_memory_equal_the_same_pixels_from_a_file() {
        let dir = std::env::temp_dir().join(format!("wbs-memory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rgb = ::image::RgbImage::from_fn(40, 30, |x, y| {
            ::image::Rgb([(x * 5) as u8, (y * 7) as u8, ((x * y) % 251) as u8])
        });
        let path = dir.join("rgb.png");
        rgb.save(&path).unwrap();
        let from_file = load_gray(&path, &LoadOptions::default()).unwrap();
        let from_memory = gray_from_pixels("m", 40, 30, 3, Pixels::U8(rgb.as_raw())).unwrap();
        assert_eq!(from_file, from_memory);
        std::fs::remove_dir_all(dir).ok();

        let wide: Vec<u16> = rgb.as_raw().iter().map(|&v| v as u16 * 257).collect();
        let from_u16 = gray_from_pixels("m", 40, 30, 3, Pixels::U16(&wide)).unwrap();
        for (a, b) in from_u16.data().iter().zip(from_memory.data()) {
            assert!((a - b).abs() < 1e-3, "{a} {b}");
        }
        let unit: Vec<f32> = rgb.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
        let from_f32 = gray_from_pixels("m", 40, 30, 3, Pixels::F32(&unit)).unwrap();
        for (a, b) in from_f32.data().iter().zip(from_memory.data()) {
            assert!((a - b).abs() < 1e-3, "{a} {b}");
        }
        let gray: Vec<u8> = (0..40 * 30).map(|i| (i % 256) as u8).collect();
        let g = gray_from_pixels("m", 40, 30, 1, Pixels::U8(&gray)).unwrap();
        assert_eq!(g.at(3, 1), 43.0);
        let drawn = rgb_from_pixels("m", 40, 30, 1, Pixels::U8(&gray)).unwrap();
        assert_eq!(drawn.get_pixel(3, 1).0, [43, 43, 43]);
        assert_eq!(
            rgb_from_pixels("m", 40, 30, 3, Pixels::F32(&unit)).unwrap(),
            rgb
        );
    }

    #[test]
    fn bad_buffers_are_one_line_image_errors() {
        let v = vec![0u8; 40 * 30];
        for (result, expected) in [
            (
                gray_from_pixels("img", 40, 31, 1, Pixels::U8(&v)),
                "1200 values do not make a 40x31",
            ),
            (
                gray_from_pixels("img", 20, 21, 3, Pixels::U8(&v[..1200])),
                "with 3 channels",
            ),
            (
                gray_from_pixels("img", 40, 10, 3, Pixels::U8(&v)),
                "at least 16x16",
            ),
            (
                gray_from_pixels("img", 20, 15, 4, Pixels::U8(&v)),
                "4 channels per pixel",
            ),
            (
                gray_from_pixels("img", 40, 30, 1, Pixels::F32(&vec![2.0; 1200])),
                "outside 0..1",
            ),
            (
                gray_from_pixels("img", 40, 30, 1, Pixels::F32(&vec![f32::NAN; 1200])),
                "NaN is outside 0..1",
            ),
        ] {
            let e = result.unwrap_err();
            assert!(matches!(e, Error::Image { .. }));
            let e = e.to_string();
            assert!(e.starts_with("img: ") && e.contains(expected), "{e}");
        }
    }
}
