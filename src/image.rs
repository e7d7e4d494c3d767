//! Loading images into the one internal format: single-channel f32 in 0..255.
//!
//! PNG, JPEG, PNM (`.ppm`/`.pgm`, as the Oxford set is distributed) and BMP are read, 8- or 16-bit,
//! gray, gray+alpha, RGB or RGBA. The EXIF orientation is applied (phone photos), alpha is
//! ignored, and colour becomes gray as the mean of R, G and B (as Perdoch's hesaff does; the
//! Hessian threshold assumes that range). Every failure is a one-line [`Error::Image`].

use std::path::Path;

use ::image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits, RgbImage};

use crate::{Error, Result};

pub mod memory;

/// The smallest side wbs accepts: below this no scale-space octave fits and no feature could be
/// described, so such an image is an input error rather than a silent "no features".
pub const MIN_SIDE: usize = 16;

/// The default size limit, in megapixels. Larger images are refused unless the caller raises it
/// (`--max-megapixels`), because the scale space of a 100 MP photo needs several GB of memory.
pub const DEFAULT_MAX_MEGAPIXELS: f64 = 40.0;

/// File extensions taken for images when a folder is scanned (compared case-insensitively), in
/// the order tried when several files share a stem. The content decides the format when loading.
pub const IMAGE_EXTENSIONS: [&str; 11] = [
    "png", "jpg", "jpeg", "ppm", "pgm", "pnm", "pbm", "bmp", "tif", "tiff", "webp",
];

/// Whether `path` ends in one of [`IMAGE_EXTENSIONS`].
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A single-channel f32 image, row-major, values nominally in 0..255.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl GrayImage {
    /// A black image.
    pub fn new(width: usize, height: usize) -> Self {
        GrayImage {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    /// An image from row-major pixel values; `data.len()` must be `width * height`.
    pub fn from_vec(width: usize, height: usize, data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            width * height,
            "pixel count does not match the size"
        );
        GrayImage {
            width,
            height,
            data,
        }
    }

    /// An image whose pixel (x, y) is `f(x, y)`.
    pub fn from_fn(width: usize, height: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                data.push(f(x, y));
            }
        }
        GrayImage {
            width,
            height,
            data,
        }
    }

    /// The number of columns.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The number of rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, row-major: pixel (x, y) is `data()[y * width + x]`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The pixels, row-major, for writing in place.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The row-major pixels, without copying.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// The pixel at column `x`, row `y` (panics when outside: use for in-range loops).
    #[inline]
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// One row of pixels.
    #[inline]
    pub fn row(&self, y: usize) -> &[f32] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    /// Bilinear sample at (x, y) with coordinates clamped to the pixel centres of the image
    /// (border replication).
    #[inline]
    pub fn sample_clamped(&self, x: f32, y: f32) -> f32 {
        let max_x = (self.width - 1) as f32;
        let max_y = (self.height - 1) as f32;
        // Clamped to be non-negative, so truncation is floor (and avoids a libm call).
        let x = x.clamp(0.0, max_x);
        let y = y.clamp(0.0, max_y);
        let x0 = x as usize;
        let y0 = y as usize;
        let fx = x - x0 as f32;
        let fy = y - y0 as f32;
        let x1 = (x0 + 1).min(self.width - 1);
        let y1 = (y0 + 1).min(self.height - 1);
        let top = self.at(x0, y0) * (1.0 - fx) + self.at(x1, y0) * fx;
        let bottom = self.at(x0, y1) * (1.0 - fx) + self.at(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// Every second pixel in both directions, starting at (0, 0): the octave step of the scale
    /// space. Pixel (2r, 2c) becomes (r, c), so coordinates scale by exactly 2 with no shift.
    pub fn decimate(&self) -> GrayImage {
        let width = self.width.div_ceil(2);
        let height = self.height.div_ceil(2);
        GrayImage::from_fn(width, height, |x, y| self.at(2 * x, 2 * y))
    }
}

/// Limits applied while loading.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Images with more megapixels than this are refused before they are decoded.
    pub max_megapixels: f64,
    /// Turn the pixels as the EXIF orientation says (phone photos held upright). `false` reads
    /// them as stored, the way COLMAP does, so that every photo of one camera has the sensor's
    /// width and height whichever way it was held (`wbs collection`).
    pub apply_orientation: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_megapixels: DEFAULT_MAX_MEGAPIXELS,
            apply_orientation: true,
        }
    }
}

/// Loads an image file as gray f32 in 0..255, with EXIF orientation applied. Fails with
/// [`Error::Image`] for a missing, unsupported, corrupt or oversized file or one with a side below
/// [`MIN_SIDE`], and with [`Error::Io`] when reading fails.
pub fn load_gray(path: &Path, options: &LoadOptions) -> Result<GrayImage> {
    let image = decode(path, options)?;
    let gray = to_gray(&image);
    check_usable(path, &gray)?;
    Ok(gray)
}

/// Loads an image file as 8-bit RGB (for drawing), with EXIF orientation applied.
pub fn load_rgb(path: &Path, options: &LoadOptions) -> Result<RgbImage> {
    Ok(decode(path, options)?.to_rgb8())
}

/// Decodes any supported file, with EXIF orientation applied, after checking its header for the
/// size limit; the format is recognised from the content, not the extension. [`MIN_SIDE`] is not
/// checked.
pub fn decode(path: &Path, options: &LoadOptions) -> Result<DynamicImage> {
    if !path.exists() {
        return Err(Error::image(path, "no such file"));
    }
    if path.is_dir() {
        return Err(Error::image(path, "is a directory, not an image file"));
    }
    // Trust the content, not the extension: a text file named .png is "not an image", not a
    // "corrupt PNG".
    let mut head = [0u8; 64];
    let read = {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        file.read(&mut head).map_err(|e| Error::io(path, e))?
    };
    if read == 0 {
        return Err(Error::image(path, "empty file"));
    }
    let format = ::image::guess_format(&head[..read]).map_err(|_| {
        Error::image(
            path,
            "not a supported image (wbs reads PNG, JPEG, PNM and BMP files)",
        )
    })?;
    let mut reader = ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    reader.set_format(format);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| describe_decode_error(path, e))?;
    let (width, height) = decoder.dimensions();
    let megapixels = width as f64 * height as f64 / 1e6;
    if megapixels > options.max_megapixels {
        return Err(Error::image(
            path,
            format!(
                "image is {width}x{height} ({megapixels:.1} MP), over the {} MP limit; \
                 pass --max-megapixels {} to process it (needs about {:.1} GB of memory)",
                options.max_megapixels,
                megapixels.ceil(),
                megapixels * 0.06
            ),
        ));
    }
    // The size was checked above; lift the decoder's own allocation cap so that an allowed
    // large image is not refused a second time with a less helpful message.
    decoder
        .set_limits(Limits::no_limits())
        .map_err(|e| describe_decode_error(path, e))?;
    let orientation = match options.apply_orientation {
        true => decoder
            .orientation()
            .unwrap_or(::image::metadata::Orientation::NoTransforms),
        false => ::image::metadata::Orientation::NoTransforms,
    };
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| describe_decode_error(path, e))?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn describe_decode_error(path: &Path, error: ImageError) -> Error {
    match error {
        ImageError::Unsupported(e) => Error::image(path, format!("unsupported image: {e}")),
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::image(path, "truncated image file")
        }
        ImageError::IoError(e) => Error::io(path, e),
        ImageError::Limits(e) => Error::image(path, format!("image too large: {e}")),
        other => Error::image(
            path,
            format!(
                "corrupt or truncated image: {}",
                one_line(&other.to_string())
            ),
        ),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_usable(path: &Path, image: &GrayImage) -> Result<()> {
    let (w, h) = (image.width(), image.height());
    if w == 0 || h == 0 {
        return Err(Error::image(
            path,
            format!("image is empty ({w}x{h} pixels)"),
        ));
    }
    if w < MIN_SIDE || h < MIN_SIDE {
        return Err(Error::image(
            path,
            format!("image is only {w}x{h} pixels; wbs needs at least {MIN_SIDE}x{MIN_SIDE}"),
        ));
    }
    Ok(())
}

/// Gray as the mean of R, G and B, scaled to 0..255 whatever the bit depth; alpha is ignored.
pub fn to_gray(image: &DynamicImage) -> GrayImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    match image {
        DynamicImage::ImageLuma8(img) => {
            GrayImage::from_vec(w, h, img.as_raw().iter().map(|&v| v as f32).collect())
        }
        DynamicImage::ImageLumaA8(img) => GrayImage::from_vec(
            w,
            h,
            img.as_raw().chunks_exact(2).map(|p| p[0] as f32).collect(),
        ),
        DynamicImage::ImageRgb8(img) => GrayImage::from_vec(
            w,
            h,
            img.as_raw()
                .chunks_exact(3)
                .map(|p| (p[0] as f32 + p[1] as f32 + p[2] as f32) / 3.0)
                .collect(),
        ),
        DynamicImage::ImageRgba8(img) => GrayImage::from_vec(
            w,
            h,
            img.as_raw()
                .chunks_exact(4)
                .map(|p| (p[0] as f32 + p[1] as f32 + p[2] as f32) / 3.0)
                .collect(),
        ),
        DynamicImage::ImageLuma16(img) => GrayImage::from_vec(
            w,
            h,
            img.as_raw().iter().map(|&v| v as f32 / 257.0).collect(),
        ),
        DynamicImage::ImageLumaA16(img) => GrayImage::from_vec(
            w,
            h,
            img.as_raw()
                .chunks_exact(2)
                .map(|p| p[0] as f32 / 257.0)
                .collect(),
        ),
        DynamicImage::ImageRgb16(img) => GrayImage::from_vec(
            w,
            h,
            img.as_raw()
                .chunks_exact(3)
                .map(|p| (p[0] as f32 + p[1] as f32 + p[2] as f32) / (3.0 * 257.0))
                .collect(),
        ),
        DynamicImage::ImageRgba16(img) => GrayImage::from_vec(
            w,
            h,
            img.as_raw()
                .chunks_exact(4)
                .map(|p| (p[0] as f32 + p[1] as f32 + p[2] as f32) / (3.0 * 257.0))
                .collect(),
        ),
        // Float images (not produced by the enabled decoders, but possible through the API):
        // assume 0..1 and scale.
        other => {
            let rgb = other.to_rgb32f();
            GrayImage::from_vec(
                w,
                h,
                rgb.as_raw()
                    .chunks_exact(3)
                    .map(|p| (p[0] + p[1] + p[2]) * 255.0 / 3.0)
                    .collect(),
            )
        }
    }
}

/// Writes a gray image as an 8-bit PNG (values rounded and clamped to 0..255).
pub fn save_gray_png(image: &GrayImage, path: &Path) -> Result<()> {
    let bytes: Vec<u8> = image
        .data()
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let buffer = ::image::GrayImage::from_raw(image.width() as u32, image.height() as u32, bytes)
        .ok_or_else(|| Error::invalid("image buffer size mismatch"))?;
    buffer
        .save(path)
        .map_err(|e| Error::image(path, format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wbs-image-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn gray_is_mean_of_rgb_and_ignores_alpha() {
        let rgba = ::image::RgbaImage::from_fn(20, 20, |_, _| ::image::Rgba([30, 60, 90, 7]));
        let gray = to_gray(&DynamicImage::ImageRgba8(rgba));
        assert!(gray.data().iter().all(|&v| (v - 60.0).abs() < 1e-4));
    }

    #[test]
    fn sixteen_bit_scales_to_0_255() {
        let img = ::image::ImageBuffer::<::image::Luma<u16>, _>::from_fn(20, 20, |x, _| {
            ::image::Luma([if x < 10 { 0 } else { 65535 }])
        });
        let gray = to_gray(&DynamicImage::ImageLuma16(img));
        assert_eq!(gray.at(0, 0), 0.0);
        assert!((gray.at(19, 0) - 255.0).abs() < 1e-3);
    }

    #[test]
    fn decimate_keeps_even_pixels() {
        let img = GrayImage::from_fn(5, 4, |x, y| (10 * y + x) as f32);
        let d = img.decimate();
        assert_eq!((d.width(), d.height()), (3, 2));
        assert_eq!(d.at(1, 1), 22.0);
        assert_eq!(d.at(2, 0), 4.0);
    }

    #[test]
    fn bilinear_sample_interpolates_and_clamps() {
        let img = GrayImage::from_fn(4, 4, |x, _| x as f32 * 10.0);
        assert!((img.sample_clamped(1.25, 2.0) - 12.5).abs() < 1e-5);
        assert_eq!(img.sample_clamped(-3.0, 0.0), 0.0);
        assert_eq!(img.sample_clamped(9.0, 9.0), 30.0);
    }

    #[test]
    fn png_and_pnm_round_trip_and_bad_files_are_clear_errors() {
        let dir = temp_dir("formats");
        let img = ::image::GrayImage::from_fn(32, 24, |x, y| ::image::Luma([(x * 7 + y) as u8]));
        let png = dir.join("a.png");
        let pgm = dir.join("a.pgm");
        img.save(&png).unwrap();
        img.save(&pgm).unwrap();
        let a = load_gray(&png, &LoadOptions::default()).unwrap();
        let b = load_gray(&pgm, &LoadOptions::default()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.at(3, 2), 23.0);

        let missing = load_gray(&dir.join("none.png"), &LoadOptions::default()).unwrap_err();
        assert!(missing.to_string().contains("no such file"), "{missing}");

        let text = dir.join("text.png");
        std::fs::write(&text, b"this is not an image at all").unwrap();
        let err = load_gray(&text, &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("not a supported image"), "{err}");

        let bytes = std::fs::read(&png).unwrap();
        let truncated = dir.join("truncated.png");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_gray(&truncated, &LoadOptions::default()).unwrap_err();
        assert!(!err.to_string().contains('\n'));

        let tiny = dir.join("tiny.png");
        ::image::GrayImage::new(1, 1).save(&tiny).unwrap();
        let err = load_gray(&tiny, &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("1x1"), "{err}");

        let limited = LoadOptions {
            max_megapixels: 0.0001,
            ..LoadOptions::default()
        };
        let err = load_gray(&png, &limited).unwrap_err();
        assert!(err.to_string().contains("--max-megapixels"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A JPEG with an APP1/EXIF segment saying "rotate 90° clockwise" (orientation 6): the
        // 40x20 image must come out 20x40.
        let dir = temp_dir("exif");
        let path = dir.join("rot.jpg");
        let img = ::image::GrayImage::from_fn(40, 20, |x, _| ::image::Luma([(x * 6) as u8]));
        let mut jpeg = Vec::new();
        ::image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&img)
            .unwrap();
        // Minimal little-endian TIFF block with one IFD entry: Orientation (0x0112) = 6.
        let tiff: Vec<u8> = vec![
            b'I', b'I', 42, 0, 8, 0, 0, 0, // header, first IFD at offset 8
            1, 0, // one entry
            0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, // tag, SHORT, count 1, value 6
            0, 0, 0, 0, // no next IFD
        ];
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut file = vec![0xFF, 0xD8, 0xFF, 0xE1, (len >> 8) as u8, len as u8];
        file.extend_from_slice(&app1);
        file.extend_from_slice(&jpeg[2..]);
        std::fs::write(&path, file).unwrap();
        let gray = load_gray(&path, &LoadOptions::default()).unwrap();
        assert_eq!((gray.width(), gray.height()), (20, 40));
        let stored = LoadOptions {
            apply_orientation: false,
            ..LoadOptions::default()
        };
        let gray = load_gray(&path, &stored).unwrap();
        assert_eq!((gray.width(), gray.height()), (40, 20));
        std::fs::remove_dir_all(dir).ok();
    }
}
