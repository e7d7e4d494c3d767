//! The cameras of a collection: what EXIF says about the camera that took each photo, the focal
//! length prior it gives, and which photos share one camera row of the database.
//!
//! - **Focal prior**, computed as COLMAP's `Bitmap::ExifFocalLength` does, from the size of the
//!   image as stored (see below): the 35 mm equivalent focal length first,
//!   `f = f35 / 35 · max(w, h)`; else the focal length in mm over the sensor width that the
//!   focal-plane resolution gives, `f = f_mm / (PixelXDimension / FocalPlaneXResolution · unit)
//!   · max(w, h)` (COLMAP reads the units inch and cm; wbs also mm and µm). COLMAP looks the
//!   sensor width up in its table of camera models before the focal-plane resolution; wbs has no
//!   such table. Without a prior: COLMAP's default `f = 1.2 · max(w, h)`, not marked as a prior.
//! - **Sharing** ([`CameraMode`]): `auto` shares one camera between the photos whose EXIF names
//!   the same make, model and focal length (35 mm equivalent, else in mm) at the same image size,
//!   as COLMAP's `Bitmap::ExifCameraModel` keys them; a photo without them gets its own.
//!   `per-image`, `single` and `per-folder` mirror COLMAP's `ImageReader` options (one camera
//!   per image, `single_camera`, `single_camera_per_folder`); a size is never shared with
//!   another size (one camera per size for `single` and per folder and size for `per-folder`).
//! - **Orientation**: COLMAP reads pixels as stored and ignores the EXIF orientation (so that a
//!   camera held upright or sideways stays one camera); `wbs collection` does the same
//!   ([`crate::image::LoadOptions::apply_orientation`]), so keypoints and camera sizes are in the
//!   pixel frame COLMAP reads from the same file. The orientation is read but only reported.
//! - EXIF is untrusted: unreadable or corrupt EXIF gives no prior ([`ExifStatus::Corrupt`] with
//!   its reason) and never stops a run.

use std::fmt;
use std::io::{BufRead, Seek};
use std::path::Path;
use std::str::FromStr;

use crate::{Error, Result};

/// How photos share cameras (intrinsics) in the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CameraMode {
    /// Share by EXIF identity (make, model, focal length, size); one camera per photo without.
    #[default]
    Auto,
    /// One camera per photo.
    PerImage,
    /// One camera for every photo (of one size): COLMAP's `single_camera`.
    Single,
    /// One camera per folder (and size): COLMAP's `single_camera_per_folder`.
    PerFolder,
}

impl CameraMode {
    /// The name on the command line and in the database's settings.
    pub fn name(self) -> &'static str {
        match self {
            CameraMode::Auto => "auto",
            CameraMode::PerImage => "per-image",
            CameraMode::Single => "single",
            CameraMode::PerFolder => "per-folder",
        }
    }
}

impl fmt::Display for CameraMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CameraMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<CameraMode, String> {
        [
            CameraMode::Auto,
            CameraMode::PerImage,
            CameraMode::Single,
            CameraMode::PerFolder,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| format!("'{s}' is not a camera mode: auto, per-image, single or per-folder"))
    }
}

/// What EXIF says about the camera of one photo (the fields wbs uses; each `None` when absent,
/// blank or not a positive number).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExifCamera {
    /// `Make`.
    pub make: Option<String>,
    /// `Model`.
    pub model: Option<String>,
    /// `FocalLength`, mm.
    pub focal_length_mm: Option<f64>,
    /// `FocalLengthIn35mmFilm`, mm.
    pub focal_length_35mm: Option<f64>,
    /// `FocalPlaneXResolution`: pixels per `FocalPlaneResolutionUnit`.
    pub focal_plane_x_resolution: Option<f64>,
    /// `FocalPlaneResolutionUnit`: 2 inch, 3 cm, 4 mm, 5 µm.
    pub focal_plane_resolution_unit: Option<u32>,
    /// `PixelXDimension`: the width the camera wrote (before any resizing).
    pub pixel_x_dimension: Option<u32>,
    /// `Orientation` (1–8); read, not applied.
    pub orientation: Option<u32>,
}

/// The EXIF of one photo.
#[derive(Clone, Debug, PartialEq)]
pub enum ExifStatus {
    /// The file has no EXIF.
    Absent,
    /// EXIF read (possibly in part: fields after a broken one may be missing).
    Found(ExifCamera),
    /// EXIF present but unreadable: the reason.
    Corrupt(String),
}

/// Longest make or model kept (EXIF strings are untrusted).
const MAX_TEXT: usize = 64;

fn text(exif: &exif::Exif, tag: exif::Tag) -> Option<String> {
    let field = exif.get_field(tag, exif::In::PRIMARY)?;
    let exif::Value::Ascii(values) = &field.value else {
        return None;
    };
    let raw = values.first()?;
    let s: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn positive(v: f64) -> Option<f64> {
    (v.is_finite() && v > 0.0).then_some(v)
}

fn number(exif: &exif::Exif, tag: exif::Tag) -> Option<f64> {
    let field = exif.get_field(tag, exif::In::PRIMARY)?;
    let v = match &field.value {
        exif::Value::Rational(r) => r.first().filter(|r| r.denom != 0)?.to_f64(),
        value => value.get_uint(0)? as f64,
    };
    positive(v)
}

fn uint(exif: &exif::Exif, tag: exif::Tag) -> Option<u32> {
    exif.get_field(tag, exif::In::PRIMARY)?.value.get_uint(0)
}

/// Reads the EXIF of an image file's content (JPEG, TIFF, PNG, WebP, HEIF). Never fails: a file
/// without EXIF is [`ExifStatus::Absent`], unreadable EXIF [`ExifStatus::Corrupt`].
pub fn read_exif<R: BufRead + Seek>(reader: &mut R) -> ExifStatus {
    let mut first_error = None;
    let read = exif::Reader::new()
        .continue_on_error(true)
        .read_from_container(reader)
        .or_else(|e| e.distill_partial_result(|errors| first_error = errors.into_iter().next()));
    let exif = match read {
        // Broken in part: what could be read is used, unless nothing could.
        Ok(exif) => match first_error {
            Some(e) if exif.fields().next().is_none() => {
                return ExifStatus::Corrupt(format!("unreadable EXIF: {e}"));
            }
            _ => exif,
        },
        Err(exif::Error::NotFound(_)) => return ExifStatus::Absent,
        Err(e) => return ExifStatus::Corrupt(format!("unreadable EXIF: {e}")),
    };
    use exif::Tag;
    ExifStatus::Found(ExifCamera {
        make: text(&exif, Tag::Make),
        model: text(&exif, Tag::Model),
        focal_length_mm: number(&exif, Tag::FocalLength),
        focal_length_35mm: number(&exif, Tag::FocalLengthIn35mmFilm),
        focal_plane_x_resolution: number(&exif, Tag::FocalPlaneXResolution),
        focal_plane_resolution_unit: uint(&exif, Tag::FocalPlaneResolutionUnit),
        pixel_x_dimension: uint(&exif, Tag::PixelXDimension),
        orientation: uint(&exif, Tag::Orientation),
    })
}

/// COLMAP's default focal length when nothing is known: `1.2 · max(w, h)`.
pub fn default_focal(size: [usize; 2]) -> f64 {
    1.2 * size[0].max(size[1]) as f64
}

/// The focal length prior in pixels for an image of `size` (as stored) from its EXIF, computed
/// as COLMAP does (see the [module documentation](self)); `None` without enough EXIF.
pub fn focal_prior(exif: &ExifCamera, size: [usize; 2]) -> Option<f64> {
    let max = size[0].max(size[1]) as f64;
    if let Some(f35) = exif.focal_length_35mm {
        return positive(f35 / 35.0 * max);
    }
    let focal_mm = exif.focal_length_mm?;
    let mm_per_unit = match exif.focal_plane_resolution_unit? {
        2 => 25.4,
        3 => 10.0,
        4 => 1.0,
        5 => 0.001,
        _ => return None,
    };
    let sensor_mm = exif.pixel_x_dimension? as f64 / exif.focal_plane_x_resolution? * mm_per_unit;
    positive(focal_mm / sensor_mm * max)
}

/// What is read of one photo before its pixels: its size as stored and its EXIF.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInfo {
    /// Width and height as stored (no EXIF orientation applied).
    pub size: [usize; 2],
    /// Its EXIF.
    pub exif: ExifStatus,
}

/// Reads the size (from the header) and the EXIF of the image file `path`. Fails only when the
/// file cannot be opened or its header not read; EXIF problems are in [`ImageInfo::exif`].
pub fn read_info(path: &Path) -> Result<ImageInfo> {
    let reader = ::image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::io(path, e))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::image(path, format!("unreadable image header: {e}")))?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let exif = read_exif(&mut std::io::BufReader::new(file));
    Ok(ImageInfo {
        size: [w as usize, h as usize],
        exif,
    })
}

/// The camera a photo gets: photos with equal `identity` share one camera row.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraSpec {
    /// The sharing key (recorded in the database, so that `--add` finds the camera again).
    pub identity: String,
    /// Width and height as stored.
    pub size: [usize; 2],
    /// The focal length, pixels: the EXIF prior, or COLMAP's default.
    pub focal: f64,
    /// `true` when `focal` came from EXIF (COLMAP's `prior_focal_length`).
    pub prior: bool,
}

/// The camera of the photo `name` (relative to the image folder, `/`-separated) under `mode`.
pub fn camera_spec(mode: CameraMode, name: &str, info: &ImageInfo) -> CameraSpec {
    let [w, h] = info.size;
    let exif = match &info.exif {
        ExifStatus::Found(e) => Some(e),
        _ => None,
    };
    let prior = exif.and_then(|e| focal_prior(e, info.size));
    let identity = match mode {
        CameraMode::PerImage => format!("image:{name}"),
        CameraMode::Single => format!("single:{w}x{h}"),
        CameraMode::PerFolder => {
            let folder = name.rsplit_once('/').map_or("", |(f, _)| f);
            format!("folder:{folder}:{w}x{h}")
        }
        CameraMode::Auto => match exif.and_then(|e| {
            let focal = e.focal_length_35mm.or(e.focal_length_mm)?;
            Some(format!(
                "exif:{}|{}|{focal}|{w}x{h}",
                e.make.as_ref()?,
                e.model.as_ref()?
            ))
        }) {
            Some(id) => id,
            None => format!("image:{name}"),
        },
    };
    CameraSpec {
        identity,
        size: info.size,
        focal: prior.unwrap_or_else(|| default_focal(info.size)),
        prior: prior.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_follows_colmaps_order() {
        let size = [4000, 3000];
        let mut e = ExifCamera {
            focal_length_35mm: Some(28.0),
            focal_length_mm: Some(4.0),
            focal_plane_x_resolution: Some(1000.0),
            focal_plane_resolution_unit: Some(3), // cm
            pixel_x_dimension: Some(4000),
            ..ExifCamera::default()
        };
        assert_eq!(focal_prior(&e, size), Some(28.0 / 35.0 * 4000.0));
        e.focal_length_35mm = None;
        // Sensor 4000 px / 1000 px/cm = 4 cm = 40 mm wide: f = 4 / 40 · 4000.
        assert!((focal_prior(&e, size).unwrap() - 400.0).abs() < 1e-9);
        e.focal_plane_resolution_unit = Some(2); // inch: 101.6 mm
        assert!((focal_prior(&e, size).unwrap() - 4.0 / 101.6 * 4000.0).abs() < 1e-9);
        e.focal_plane_resolution_unit = Some(1); // no unit
        assert_eq!(focal_prior(&e, size), None);
        e.focal_plane_resolution_unit = Some(3);
        e.pixel_x_dimension = None;
        assert_eq!(focal_prior(&e, size), None);
    }

    #[test]
    fn sharing_by_mode() {
        let exif = ExifCamera {
            make: Some("Canon".into()),
            model: Some("EOS".into()),
            focal_length_mm: Some(50.0),
            ..ExifCamera::default()
        };
        let info = |exif: ExifStatus| ImageInfo {
            size: [640, 480],
            exif,
        };
        let with = info(ExifStatus::Found(exif.clone()));
        let without = info(ExifStatus::Absent);
        let auto = |name, i| camera_spec(CameraMode::Auto, name, i).identity;
        assert_eq!(auto("a/1.jpg", &with), auto("b/2.jpg", &with));
        assert_ne!(auto("a/1.jpg", &without), auto("a/2.jpg", &without));
        let folder = |name| camera_spec(CameraMode::PerFolder, name, &without).identity;
        assert_eq!(folder("a/1.jpg"), folder("a/2.jpg"));
        assert_ne!(folder("a/1.jpg"), folder("b/1.jpg"));
        let spec = camera_spec(CameraMode::Single, "x.jpg", &with);
        assert_eq!(spec.identity, "single:640x480");
        assert!(!spec.prior); // a focal length in mm alone gives no prior
        assert_eq!(spec.focal, 1.2 * 640.0);
        assert_eq!(
            "per-folder".parse::<CameraMode>(),
            Ok(CameraMode::PerFolder)
        );
        assert!("folder"
            .parse::<CameraMode>()
            .unwrap_err()
            .contains("per-folder"));
    }

    #[test]
    fn corrupt_exif_is_reported_not_fatal() {
        // A JPEG start, then an APP1 "Exif" segment whose TIFF header is garbage.
        let mut file = vec![0xFF, 0xD8, 0xFF, 0xE1, 0, 16];
        file.extend_from_slice(b"Exif\0\0XX\x2a\0\xff\xff\xff\xff");
        file.extend_from_slice(&[0xFF, 0xD9]);
        let status = read_exif(&mut std::io::Cursor::new(file));
        assert!(matches!(status, ExifStatus::Corrupt(_)), "{status:?}");
        let status = read_exif(&mut std::io::Cursor::new(vec![0xFF, 0xD8, 0xFF, 0xD9]));
        assert_eq!(status, ExifStatus::Absent);
    }
}
