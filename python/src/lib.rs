//! `wbs._wbs`: the native half of the Python package. A thin layer over the wbs library: numpy
//! arrays and paths in, the library's types out as Python objects. The GIL is released while the
//! library works, and a panic inside it comes back as `wbs.Error`, never as a crash.
//!
//! The Python half (`wbs/__init__.py`) adds the conversions to OpenCV and kornia.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use numpy::ndarray::{Array1, Array2, Array3};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use wbs::describe::Described;
use wbs::feature::Feature;
use wbs::geometry;
use wbs::image::memory::{gray_from_pixels, rgb_from_pixels, Pixels};
use wbs::image::{load_gray, load_rgb, GrayImage, LoadOptions};
use wbs::laf::{Laf, MR_SIZE};
use wbs::pipeline::{Config, ImageFeatures, MatchReport};
use wbs::settings::config_from_settings;
use wbs::viz::{draw_matches as draw, MatchDrawing};

create_exception!(
    wbs,
    Error,
    PyException,
    "Every error of wbs: one line, as the CLI prints it."
);
create_exception!(
    wbs,
    ImageError,
    Error,
    "An image that is missing, unreadable or unusable."
);
create_exception!(
    wbs,
    WeightsError,
    Error,
    "Network weights that are missing or malformed."
);
create_exception!(
    wbs,
    SettingsError,
    Error,
    "Settings that are unknown or do not make sense."
);
create_exception!(
    wbs,
    DeviceError,
    Error,
    "A device (GPU) that was asked for but cannot be used."
);

/// The library's error as the matching Python exception, with its one-line message (a setting
/// out of range named as `Matcher`'s keyword, as the CLI names its flag).
fn to_py(e: wbs::Error) -> PyErr {
    let message = e.to_string();
    match e {
        wbs::Error::Image { .. } => ImageError::new_err(message),
        wbs::Error::Weights(_) => WeightsError::new_err(message),
        wbs::Error::Setting {
            setting,
            rule,
            value,
        } => SettingsError::new_err(format!(
            "{} must be {rule}, got {value}",
            wbs::settings::setting_name(setting)
        )),
        wbs::Error::Invalid(_) | wbs::Error::Usage(_) => SettingsError::new_err(message),
        wbs::Error::Device(_) => DeviceError::new_err(message),
        wbs::Error::Dataset(_)
        | wbs::Error::Io { .. }
        | wbs::Error::CannotWrite { .. }
        | wbs::Error::PairsFailed { .. } => Error::new_err(message),
    }
}

/// Runs `work` without the GIL; a panic becomes `wbs.Error` instead of crossing into Python.
fn run<T: Send>(py: Python<'_>, work: impl FnOnce() -> wbs::Result<T> + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(work)))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Error::new_err(format!("internal error in wbs (please report it): {what}"))
        })?
        .map_err(to_py)
}

/// An image argument: a path (str or os.PathLike) or a numpy array, read before the GIL is
/// released (arrays are copied; paths are loaded without the GIL).
enum ImageArg {
    Path(PathBuf),
    Gray(GrayImage),
}

impl ImageArg {
    fn extract(arg: &Bound<'_, PyAny>, name: &str) -> PyResult<ImageArg> {
        if let Ok(array) = arg.cast::<PyUntypedArray>() {
            return pixels(array, name, |w, h, c, p| gray_from_pixels(name, w, h, c, p))
                .map(ImageArg::Gray);
        }
        path_of(arg, name).map(ImageArg::Path)
    }

    fn load(self, options: &LoadOptions) -> wbs::Result<(GrayImage, String)> {
        match self {
            ImageArg::Gray(image) => Ok((image, String::new())),
            ImageArg::Path(path) => {
                load_gray(&path, options).map(|image| (image, path.display().to_string()))
            }
        }
    }
}

/// `os.fspath(arg)`, or a clear error naming what was passed.
fn path_of(arg: &Bound<'_, PyAny>, name: &str) -> PyResult<PathBuf> {
    let os = arg.py().import("os")?;
    match os.call_method1("fspath", (arg,)) {
        Ok(path) => Ok(PathBuf::from(path.extract::<String>()?)),
        Err(_) => Err(ImageError::new_err(format!(
            "{name}: expected a path or a numpy array (H×W gray or H×W×3 RGB; uint8, uint16 or \
             float32), got {}",
            arg.get_type().name()?
        ))),
    }
}

/// The array's pixels handed to `make` as (width, height, channels, pixels), after the dtype and
/// shape checks.
fn pixels<T>(
    array: &Bound<'_, PyUntypedArray>,
    name: &str,
    make: impl FnOnce(usize, usize, usize, Pixels) -> wbs::Result<T>,
) -> PyResult<T> {
    let shape = array.shape().to_vec();
    let (h, w, c) = match shape[..] {
        [h, w] => (h, w, 1),
        [h, w, 3] => (h, w, 3),
        _ => {
            return Err(ImageError::new_err(format!(
                "{name}: array of shape {}; wbs takes H×W (gray) or H×W×3 (RGB)",
                shape_text(&shape)
            )))
        }
    };
    let dtype = array.dtype().to_string();
    let result = match dtype.as_str() {
        "uint8" => make(w, h, c, Pixels::U8(&contiguous::<u8>(array)?)),
        "uint16" => make(w, h, c, Pixels::U16(&contiguous::<u16>(array)?)),
        "float32" => make(w, h, c, Pixels::F32(&contiguous::<f32>(array)?)),
        other => {
            return Err(ImageError::new_err(format!(
                "{name}: dtype {other} is not supported; pass uint8, uint16 or float32 (0..1)"
            )))
        }
    };
    result.map_err(to_py)
}

/// A shape as numpy writes it: `(64, 64, 4)`, `(64,)`.
fn shape_text(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The array's values in row-major order (copied, whatever its strides).
fn contiguous<T: numpy::Element + Copy>(array: &Bound<'_, PyUntypedArray>) -> PyResult<Vec<T>> {
    let typed: PyReadonlyArrayDyn<'_, T> = array.extract()?;
    Ok(match typed.as_slice() {
        Ok(slice) => slice.to_vec(),
        Err(_) => typed.as_array().iter().copied().collect(),
    })
}

/// An N×`cols` float array as rows of f64 (float32 or float64 accepted).
fn rows(arg: &Bound<'_, PyAny>, name: &str, cols: usize) -> PyResult<Vec<Vec<f64>>> {
    let np = arg.py().import("numpy")?;
    let array = np
        .call_method1("ascontiguousarray", (arg, "float64"))
        .map_err(|e| PyValueError::new_err(format!("{name}: not a numeric array ({e})")))?;
    let array: PyReadonlyArrayDyn<'_, f64> = array.extract()?;
    let shape = array.shape().to_vec();
    let flat = array.as_slice().expect("made contiguous");
    let ok = match shape[..] {
        [_, c] => c == cols,
        [_, 2, 3] => cols == 6,
        _ => false,
    };
    if !ok {
        let want = if cols == 6 { "N×2×3" } else { "N×2" };
        return Err(PyValueError::new_err(format!(
            "{name}: array of shape {}; expected {want}",
            shape_text(&shape)
        )));
    }
    Ok(flat.chunks_exact(cols).map(<[f64]>::to_vec).collect())
}

/// The settings `**kwargs` as (name, text) pairs; None means "the default" and is left out.
fn settings_of(
    fixed: &[(&str, &str)],
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = fixed
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(settings) = settings {
        for (key, value) in settings.iter() {
            if value.is_none() {
                continue;
            }
            let text = if value.hasattr("__fspath__")? {
                value.py().import("os")?.call_method1("fspath", (&value,))?
            } else {
                value.str()?.into_any()
            };
            out.push((key.extract()?, text.extract()?));
        }
    }
    Ok(out)
}

fn config_of(settings: &[(String, String)]) -> PyResult<Config> {
    config_from_settings(settings.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(to_py)
}

/// The synthesised views of one image, kept for the pairs that name it (MODS methods): pass it
/// to `Matcher.match(image1, image2, views=(store1, store2))`. One image, one Matcher's settings.
#[pyclass(frozen, module = "wbs")]
struct ViewStore {
    inner: Arc<wbs::mods::ViewStore>,
}

#[pymethods]
impl ViewStore {
    #[new]
    fn new() -> ViewStore {
        ViewStore {
            inner: Arc::new(wbs::mods::ViewStore::new()),
        }
    }

    /// The views held (one per view and descriptor).
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("wbs.ViewStore({} views)", self.inner.len())
    }
}

/// `views=(store1, store2)` of `Matcher.match`: a store or None per image.
type StorePair<'py> = (Option<Bound<'py, ViewStore>>, Option<Bound<'py, ViewStore>>);

/// Finds local affine features and matches images with one configuration (see the docs).
#[pyclass(frozen, subclass, module = "wbs")]
struct Matcher {
    inner: wbs::Matcher,
}

#[pymethods]
impl Matcher {
    #[new]
    #[pyo3(signature = (method="hesaff", descriptor="rootsift", geometry="homography", device="auto", **settings))]
    fn new(
        py: Python<'_>,
        method: &str,
        descriptor: &str,
        geometry: &str,
        device: &str,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Matcher> {
        let settings = settings_of(
            &[
                ("method", method),
                ("descriptor", descriptor),
                ("geometry", geometry),
                ("device", device),
            ],
            settings,
        )?;
        let config = config_of(&settings)?;
        let inner = run(py, || wbs::Matcher::new(config))?;
        Ok(Matcher { inner })
    }

    /// Every setting, as in the CLI's JSON report (`settings`).
    #[getter]
    fn settings(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &self.inner.config())
    }

    /// The device that runs the networks and the matching: "cpu" or "cuda".
    #[getter]
    fn device(&self) -> String {
        self.inner.device().kind.to_string()
    }

    /// Why `device="auto"` chose this device, or None.
    #[getter]
    fn device_note(&self) -> Option<String> {
        self.inner.device().note.clone()
    }

    /// Milliseconds that loading the networks took.
    #[getter]
    fn loading_ms(&self) -> f64 {
        self.inner.loading_ms()
    }

    /// Features of one image (a path or an array).
    fn detect(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<Features> {
        let options = self.inner.config().load_options();
        let image = ImageArg::extract(image, "image")?;
        let features = run(py, || {
            let (gray, _) = image.load(&options)?;
            self.inner.extract_features(&gray)
        })?;
        Ok(Features {
            inner: Arc::new(features),
        })
    }

    /// Matches two images (paths or arrays). `views`: a `ViewStore` (or None) per image, which
    /// keeps a MODS method's views of that image for the next pairs that name it.
    #[pyo3(name = "match", signature = (image1, image2, views=None))]
    fn match_images(
        &self,
        py: Python<'_>,
        image1: &Bound<'_, PyAny>,
        image2: &Bound<'_, PyAny>,
        views: Option<StorePair<'_>>,
    ) -> PyResult<Match> {
        let options = self.inner.config().load_options();
        let a = ImageArg::extract(image1, "image 1")?;
        let b = ImageArg::extract(image2, "image 2")?;
        let (s1, s2) = views.unwrap_or((None, None));
        let stores = [s1, s2].map(|s| s.map(|s| s.get().inner.clone()));
        let report = run(py, || {
            let stores = [stores[0].as_deref(), stores[1].as_deref()];
            match (a, b) {
                (ImageArg::Path(p1), ImageArg::Path(p2)) => {
                    self.inner.match_files_with_views(&p1, &p2, stores)
                }
                (a, b) => {
                    let ((g1, n1), (g2, n2)) = (a.load(&options)?, b.load(&options)?);
                    let mut report = self.inner.match_images_with_views(&g1, &g2, stores)?;
                    report.images = [n1, n2];
                    Ok(report)
                }
            }
        })?;
        Ok(Match { report })
    }

    /// Matches features found earlier (by `detect` or made with `Features(...)`).
    fn match_features(&self, py: Python<'_>, f1: &Features, f2: &Features) -> PyResult<Match> {
        let (d1, d2) = (f1.inner.described.dimension, f2.inner.described.dimension);
        if d1 != d2 && !f1.inner.described.is_empty() && !f2.inner.described.is_empty() {
            return Err(PyValueError::new_err(format!(
                "the descriptors differ in length: {d1} in f1, {d2} in f2"
            )));
        }
        let (a, b) = (f1.inner.clone(), f2.inner.clone());
        let report = run(py, || self.inner.match_features(&a, &b))?;
        Ok(Match { report })
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "wbs.Matcher(method={:?}, descriptor={:?}, geometry={:?}, device={:?})",
            c.method.name(),
            c.descriptor.name(),
            c.ransac.kind.name(),
            self.device()
        )
    }
}

/// The features of one image: frames, detector responses and descriptors.
#[pyclass(frozen, module = "wbs")]
struct Features {
    inner: Arc<ImageFeatures>,
}

impl Features {
    fn features(&self) -> &[Feature] {
        &self.inner.described.features
    }
}

#[pymethods]
impl Features {
    #[new]
    #[pyo3(signature = (lafs, descriptors, responses=None, image_size=None))]
    fn new(
        lafs: &Bound<'_, PyAny>,
        descriptors: &Bound<'_, PyAny>,
        responses: Option<&Bound<'_, PyAny>>,
        image_size: Option<(usize, usize)>,
    ) -> PyResult<Features> {
        let frames = rows(lafs, "lafs", 6)?;
        let np = lafs.py().import("numpy")?;
        let desc = np.call_method1("ascontiguousarray", (descriptors, "float32"))?;
        let desc: PyReadonlyArrayDyn<'_, f32> = desc.extract()?;
        let dimension = match desc.shape()[..] {
            [n, d] if n == frames.len() && d > 0 => d,
            ref shape => {
                return Err(PyValueError::new_err(format!(
                    "descriptors: array of shape {}; expected {}×D with D > 0",
                    shape_text(shape),
                    frames.len()
                )))
            }
        };
        let responses = match responses {
            Some(r) => {
                let r = rows(&np.call_method1("reshape", (r, (-1, 1)))?, "responses", 1)?;
                if r.len() != frames.len() {
                    return Err(PyValueError::new_err(format!(
                        "responses: {} values for {} frames",
                        r.len(),
                        frames.len()
                    )));
                }
                r.into_iter().map(|v| v[0] as f32).collect()
            }
            None => vec![0.0; frames.len()],
        };
        let features = frames
            .iter()
            .zip(responses)
            .map(|(f, response)| {
                let laf = Laf {
                    a: [[f[0] as f32, f[1] as f32], [f[3] as f32, f[4] as f32]],
                    c: [f[2] as f32, f[5] as f32],
                };
                Feature {
                    laf,
                    response,
                    sigma: laf.scale() / MR_SIZE,
                    octave: 0,
                    level: 1,
                }
            })
            .collect::<Vec<_>>();
        let (width, height) = image_size.unwrap_or((0, 0));
        Ok(Features {
            inner: Arc::new(ImageFeatures {
                width,
                height,
                detections: features.len(),
                shaped: features.len(),
                described: Described {
                    features,
                    descriptors: desc.as_slice().expect("made contiguous").to_vec(),
                    dimension,
                },
                times: Default::default(),
            }),
        })
    }

    fn __len__(&self) -> usize {
        self.features().len()
    }

    /// N×2×3 float32 local affine frames `[A | c]` (kornia's LAF without the batch axis).
    #[getter]
    fn lafs<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray3<f32>> {
        let flat: Vec<f32> = self
            .features()
            .iter()
            .flat_map(|f| {
                let (a, c) = (f.laf.a, f.laf.c);
                [a[0][0], a[0][1], c[0], a[1][0], a[1][1], c[1]]
            })
            .collect();
        Array3::from_shape_vec((self.features().len(), 2, 3), flat)
            .expect("6 values per frame")
            .into_pyarray(py)
    }

    /// N×2 float32 centres (x, y) in pixels; the top-left pixel's centre is (0, 0).
    #[getter]
    fn keypoints<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f32>> {
        let flat: Vec<f32> = self.features().iter().flat_map(|f| f.laf.c).collect();
        Array2::from_shape_vec((self.features().len(), 2), flat)
            .expect("2 values per frame")
            .into_pyarray(py)
    }

    /// N float32: sqrt(|det A|) in pixels (kornia's `get_laf_scale`).
    #[getter]
    fn scales<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.column(py, |f| f.laf.scale())
    }

    /// N float32 degrees: atan2(A[0,1], A[0,0]) (kornia's `get_laf_orientation`).
    #[getter]
    fn orientations<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.column(py, |f| f.laf.orientation().to_degrees())
    }

    /// N float32 detector responses (signed: saddles are negative).
    #[getter]
    fn responses<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.column(py, |f| f.response)
    }

    /// N×D float32 descriptors, one row per frame.
    #[getter]
    fn descriptors<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f32>> {
        let d = &self.inner.described;
        Array2::from_shape_vec((d.len(), d.dimension), d.descriptors.clone())
            .expect("dimension values per feature")
            .into_pyarray(py)
    }

    /// (width, height) of the image, (0, 0) when unknown.
    #[getter]
    fn image_size(&self) -> (usize, usize) {
        (self.inner.width, self.inner.height)
    }

    fn __repr__(&self) -> String {
        format!(
            "wbs.Features({} frames, {}-d descriptors)",
            self.features().len(),
            self.inner.described.dimension
        )
    }
}

impl Features {
    fn column<'py>(
        &self,
        py: Python<'py>,
        f: impl Fn(&Feature) -> f32,
    ) -> Bound<'py, PyArray1<f32>> {
        Array1::from_iter(self.features().iter().map(f)).into_pyarray(py)
    }
}

/// The outcome of matching two images, with everything the CLI's JSON report holds.
#[pyclass(frozen, module = "wbs")]
struct Match {
    report: MatchReport,
}

impl Match {
    fn details(&self) -> &wbs::pipeline::MatchDetails {
        self.report
            .details
            .as_deref()
            .expect("a report made here keeps its details")
    }
}

#[pymethods]
impl Match {
    /// At least `min_inliers` inliers.
    #[getter]
    fn registered(&self) -> bool {
        self.report.registered
    }

    /// Why the verdict is what it is, in words.
    #[getter]
    fn verdict(&self) -> &str {
        &self.report.verdict
    }

    /// The number of inliers.
    #[getter]
    fn inliers(&self) -> usize {
        self.report.inliers
    }

    /// The number of tentative correspondences (after the ratio test and the duplicate filter).
    #[getter]
    fn tentatives(&self) -> usize {
        self.report.tentatives
    }

    /// The 3×3 float64 model (H: image 1 → image 2; F: x2ᵀ·F·x1 = 0), or None.
    #[getter]
    fn model<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray2<f64>>> {
        self.report.model.map(|m| {
            Array2::from_shape_vec((3, 3), m.concat())
                .expect("3×3")
                .into_pyarray(py)
        })
    }

    /// K×2 int64: each tentative as (index into features 1, index into features 2).
    #[getter]
    fn matches<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<i64>> {
        let t = &self.details().tentatives;
        let flat = t
            .iter()
            .flat_map(|m| [m.query as i64, m.train as i64])
            .collect();
        Array2::from_shape_vec((t.len(), 2), flat)
            .expect("2 per match")
            .into_pyarray(py)
    }

    /// K bools: which rows of `matches` are inliers.
    #[getter]
    fn inlier_mask<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<bool>> {
        let d = self.details();
        let mut mask = vec![false; d.tentatives.len()];
        for &i in &d.inliers {
            mask[i] = true;
        }
        PyArray1::from_vec(py, mask)
    }

    /// K float32 second-nearest-neighbour ratios of `matches`.
    #[getter]
    fn ratios<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_vec(
            py,
            self.details().tentatives.iter().map(|t| t.ratio).collect(),
        )
    }

    /// K×4 float64: each tentative as (x1, y1, x2, y2).
    #[getter]
    fn points<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        let d = self.details();
        let flat = d
            .tentatives
            .iter()
            .flat_map(|t| {
                let (p, q) = (d.features1[t.query].laf.c, d.features2[t.train].laf.c);
                [p[0], p[1], q[0], q[1]].map(f64::from)
            })
            .collect();
        Array2::from_shape_vec((d.tentatives.len(), 4), flat)
            .expect("4 per match")
            .into_pyarray(py)
    }

    /// Milliseconds per stage, as in the report's `timings_ms`.
    #[getter]
    fn timings(&self) -> BTreeMap<String, f64> {
        self.report.timings_ms.clone()
    }

    /// The features of image 1 and image 2 that `matches` indexes.
    #[getter]
    fn features(&self) -> (Features, Features) {
        let d = self.details();
        let make = |features: &[Feature], size: [usize; 2]| Features {
            inner: Arc::new(ImageFeatures {
                width: size[0],
                height: size[1],
                detections: features.len(),
                shaped: features.len(),
                described: Described {
                    features: features.to_vec(),
                    descriptors: Vec::new(),
                    dimension: 0,
                },
                times: Default::default(),
            }),
        };
        let s = self.report.image_sizes;
        (make(&d.features1, s[0]), make(&d.features2, s[1]))
    }

    /// The report as a dict, equal to `wbs match --json`'s (`tentatives=True` adds
    /// `tentative_matches`, as `--tentatives` does).
    #[pyo3(signature = (tentatives=false))]
    fn to_dict(&self, py: Python<'_>, tentatives: bool) -> PyResult<Py<PyAny>> {
        if tentatives {
            let mut report = self.report.clone();
            report.include_tentatives();
            json_to_py(py, &report)
        } else {
            json_to_py(py, &self.report)
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "wbs.Match(registered={}, inliers={}, tentatives={})",
            if self.report.registered {
                "True"
            } else {
                "False"
            },
            self.report.inliers,
            self.report.tentatives
        )
    }
}

/// `value` through JSON (serde's text, then Python's `json.loads`): the CLI's encoding exactly.
fn json_to_py<T: serde::Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| Error::new_err(format!("cannot encode the report: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// The outcome of `verify`.
#[pyclass(frozen, module = "wbs")]
struct Verification {
    model: Option<[[f64; 3]; 3]>,
    mask: Vec<bool>,
    iterations: usize,
}

#[pymethods]
impl Verification {
    /// The 3×3 float64 model, or None when none was found.
    #[getter]
    fn model<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray2<f64>>> {
        self.model.map(|m| {
            Array2::from_shape_vec((3, 3), m.concat())
                .expect("3×3")
                .into_pyarray(py)
        })
    }

    /// N bools: the correspondences consistent with the model.
    #[getter]
    fn inlier_mask<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<bool>> {
        PyArray1::from_vec(py, self.mask.clone())
    }

    /// The number of inliers.
    #[getter]
    fn inliers(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    /// Samples LO-RANSAC drew.
    #[getter]
    fn iterations(&self) -> usize {
        self.iterations
    }

    fn __repr__(&self) -> String {
        format!(
            "wbs.Verification(inliers={}, model={})",
            self.inliers(),
            if self.model.is_some() {
                "found"
            } else {
                "None"
            }
        )
    }
}

/// wbs's LO-RANSAC (DEGENSAC for F) alone on N×2 point arrays; with `lafs1` and `lafs2` (N×2×3,
/// one frame per point) MODS's LAF check then keeps the inliers whose frames agree with the model.
#[pyfunction]
#[pyo3(signature = (points1, points2, geometry="homography", lafs1=None, lafs2=None, **settings))]
fn verify(
    py: Python<'_>,
    points1: &Bound<'_, PyAny>,
    points2: &Bound<'_, PyAny>,
    geometry: &str,
    lafs1: Option<&Bound<'_, PyAny>>,
    lafs2: Option<&Bound<'_, PyAny>>,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<Verification> {
    let p1 = rows(points1, "points1", 2)?;
    let p2 = rows(points2, "points2", 2)?;
    if p1.len() != p2.len() {
        return Err(PyValueError::new_err(format!(
            "points1 has {} rows, points2 {}: they must pair up",
            p1.len(),
            p2.len()
        )));
    }
    let frames = |arg: Option<&Bound<'_, PyAny>>, name: &str| -> PyResult<Option<Vec<Laf>>> {
        let Some(arg) = arg else { return Ok(None) };
        let r = rows(arg, name, 6)?;
        if r.len() != p1.len() {
            return Err(PyValueError::new_err(format!(
                "{name} has {} frames for {} points: one frame per point",
                r.len(),
                p1.len()
            )));
        }
        Ok(Some(
            r.iter()
                .map(|v| Laf {
                    a: [[v[0] as f32, v[1] as f32], [v[3] as f32, v[4] as f32]],
                    c: [v[2] as f32, v[5] as f32],
                })
                .collect(),
        ))
    };
    let lafs = match (frames(lafs1, "lafs1")?, frames(lafs2, "lafs2")?) {
        (Some(l1), Some(l2)) => Some(l1.into_iter().zip(l2).collect::<Vec<_>>()),
        (None, None) => None,
        _ => return Err(SettingsError::new_err(
            "lafs1/lafs2: give both (the LAF check compares the frames of each pair) or neither",
        )),
    };
    let settings = settings_of(&[("geometry", geometry)], settings)?;
    let config = config_of(&settings)?;
    config.validate().map_err(to_py)?;
    let pts = |p: Vec<Vec<f64>>| p.into_iter().map(|r| [r[0], r[1]]).collect::<Vec<_>>();
    let (p1, p2) = (pts(p1), pts(p2));
    let n = p1.len();
    let found = run(py, || {
        let mut found = geometry::verify(&p1, &p2, &config.ransac, config.ransac_method);
        // MODS's LAF check (the pipeline's, with its default constants) on the inliers.
        if let (Some(pairs), Some(v)) = (&lafs, &mut found) {
            v.inliers = config.laf_check.unwrap_or_default().survivors(
                config.ransac.kind,
                &v.model,
                config.ransac.threshold_px,
                pairs,
                &v.inliers,
                false,
            );
        }
        Ok(found)
    })?;
    let mut mask = vec![false; n];
    let (model, iterations) = match found {
        Some(v) => {
            for i in v.inliers {
                mask[i] = true;
            }
            let mut m = [[0.0; 3]; 3];
            for (r, row) in m.iter_mut().enumerate() {
                for (c, x) in row.iter_mut().enumerate() {
                    *x = v.model[(r, c)];
                }
            }
            (Some(m), v.iterations)
        }
        None => (None, 0),
    };
    Ok(Verification {
        model,
        mask,
        iterations,
    })
}

/// The two images side by side with the inliers of `result` (and their regions): H×W×3 uint8.
#[pyfunction]
#[pyo3(signature = (image1, image2, result, outliers=false, ellipses=true, max_width=2400))]
fn draw_matches<'py>(
    py: Python<'py>,
    image1: &Bound<'py, PyAny>,
    image2: &Bound<'py, PyAny>,
    result: &Match,
    outliers: bool,
    ellipses: bool,
    max_width: u32,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let options = LoadOptions::default();
    let load = |arg: &Bound<'py, PyAny>, name: &str| -> PyResult<_> {
        if let Ok(array) = arg.cast::<PyUntypedArray>() {
            pixels(array, name, |w, h, c, p| rgb_from_pixels(name, w, h, c, p))
        } else {
            let path = path_of(arg, name)?;
            load_rgb(&path, &options).map_err(to_py)
        }
    };
    let (a, b) = (load(image1, "image 1")?, load(image2, "image 2")?);
    let drawing = MatchDrawing {
        outliers,
        ellipses,
        max_width,
    };
    let picture = run(py, || Ok(draw(&a, &b, &result.report, &drawing)))?;
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    Ok(Array3::from_shape_vec((h, w, 3), picture.into_raw())
        .expect("3 bytes per pixel")
        .into_pyarray(py))
}

/// Every setting name `Matcher(**settings)` accepts, with what it sets.
#[pyfunction]
fn settings() -> BTreeMap<&'static str, &'static str> {
    wbs::settings::SETTINGS.iter().copied().collect()
}

#[pymodule]
fn _wbs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("WeightsError", py.get_type::<WeightsError>())?;
    m.add("SettingsError", py.get_type::<SettingsError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add_class::<Matcher>()?;
    m.add_class::<Features>()?;
    m.add_class::<Match>()?;
    m.add_class::<Verification>()?;
    m.add_class::<ViewStore>()?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(draw_matches, m)?)?;
    m.add_function(wrap_pyfunction!(settings, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
