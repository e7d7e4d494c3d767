//! Weight files: safetensors (the project format) in and out, import of the authors' PyTorch
//! checkpoints, and a listing for `wbs weights inspect`.
//!
//! All failures are one-line [`Error::Weights`] messages that start with the file name.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};

use super::arch::NetworkKind;
use super::pickle::DType;
use super::pth;
use crate::{Error, Result};

/// Metadata key naming the network a file is for.
pub const META_MODEL: &str = "wbs.model";
/// Metadata key naming the file a set of weights was imported from.
pub const META_SOURCE: &str = "wbs.source";
/// Metadata key holding the training epoch recorded in the source checkpoint.
pub const META_EPOCH: &str = "wbs.epoch";

/// One named float32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Shape in PyTorch order.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

/// Named float32 tensors plus string metadata: the in-memory form of a weights file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    /// The tensors by state-dict name.
    pub tensors: BTreeMap<String, Param>,
    /// String metadata (safetensors `__metadata__`).
    pub metadata: BTreeMap<String, String>,
    /// Where the weights came from (a path or a description), used to prefix error messages.
    pub source: String,
}

impl Weights {
    /// Empty weights; `source` appears in error messages.
    pub fn new(source: impl Into<String>) -> Self {
        Weights {
            source: source.into(),
            ..Default::default()
        }
    }

    /// Adds or replaces a tensor.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape`.
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "tensor data does not match its shape"
        );
        self.tensors.insert(name.into(), Param { shape, data });
    }

    /// The tensor `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.tensors.get(name)
    }

    /// The tensors' names, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Total number of values over all tensors.
    pub fn value_count(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    pub(crate) fn source_name(&self) -> &str {
        if self.source.is_empty() {
            "weights"
        } else {
            &self.source
        }
    }

    /// Reads a weights file: safetensors, or a PyTorch checkpoint (converted in memory through
    /// the same allow-listed importer as [`import_pth`]). The format is detected from the
    /// content, not the extension.
    pub fn load(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let source = path.display().to_string();
        match sniff(&bytes) {
            FileFormat::Pth => Weights::from_pth(&bytes, &source),
            FileFormat::SafeTensors | FileFormat::Unknown => {
                Weights::from_safetensors(&bytes, &source)
            }
        }
    }

    /// Converts the bytes of a PyTorch checkpoint (legacy or zip) through the allow-listed
    /// importer: float32 tensors only, `num_batches_tracked` entries dropped, the `epoch`
    /// recorded in the metadata. Names and shapes are not checked here (see [`NetworkKind::check`]).
    pub fn from_pth(bytes: &[u8], source: &str) -> Result<Weights> {
        Ok(from_checkpoint(bytes, source)?.0)
    }

    /// Parses safetensors bytes; every tensor must be float32.
    pub fn from_safetensors(bytes: &[u8], source: &str) -> Result<Weights> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            weights_error(format!(
                "{source}: not a readable safetensors file ({e}); PyTorch .pth files can be converted with `wbs weights import`"
            ))
        })?;
        let mut w = Weights::new(source);
        if let Ok((_, meta)) = SafeTensors::read_metadata(bytes) {
            if let Some(m) = meta.metadata() {
                w.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
        }
        for (name, view) in st.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(weights_error(format!(
                    "{source}: tensor '{name}' is {:?}; wbs weights must be float32 (F32)",
                    view.dtype()
                )));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            w.tensors.insert(
                name.to_string(),
                Param {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(w)
    }

    /// Writes a safetensors file with this metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let views: Vec<(&str, F32View)> = self
            .tensors
            .iter()
            .map(|(n, p)| (n.as_str(), F32View(p)))
            .collect();
        let meta: HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| {
            weights_error(format!("{}: cannot serialise weights: {e}", path.display()))
        })?;
        std::fs::write(path, with_sorted_header(bytes)).map_err(|e| Error::io(path, e))
    }
}

/// `safetensors::serialize`'s output with its JSON header's keys in sorted order.
///
/// The crate takes the metadata as a `HashMap`, whose order changes from one map to the next, so
/// the same tensors and metadata would give files that differ in their header bytes. Sorting makes
/// a seeded run's files identical byte for byte (a checksum can tell a reproduction). Bytes whose
/// header does not parse are returned as they are.
pub(crate) fn with_sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8usize.saturating_add(len)) else {
        return bytes;
    };
    // serde_json's maps are ordered by key (no `preserve_order` feature).
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let mut text = header.to_string();
    while text.len() % 8 != 0 {
        text.push(' '); // the format's padding, so that the data stays 8-byte aligned
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

/// A weights error whose text may quote names from a file: control characters (a newline in a
/// corrupt tensor name, say) are replaced so the message stays on one line.
pub(crate) fn weights_error(message: impl Into<String>) -> Error {
    let message: String = message.into();
    Error::Weights(
        message
            .chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect(),
    )
}

/// Lets a [`Param`] be written by `safetensors::serialize`.
struct F32View<'a>(&'a Param);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FileFormat {
    SafeTensors,
    Pth,
    Unknown,
}

/// Guesses the format from the first bytes. safetensors is tested first and strictly (a u64
/// header length that fits the file, then `{`): its length's low byte may well be 0x80, which on
/// its own would look like a pickle's protocol marker.
fn sniff(bytes: &[u8]) -> FileFormat {
    let header_fits = bytes.len() > 8 && {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0xff; 8]));
        n.checked_add(8)
            .is_some_and(|end| end <= bytes.len() as u64)
    };
    if header_fits && bytes[8] == b'{' {
        FileFormat::SafeTensors
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.first() == Some(&0x80) {
        FileFormat::Pth
    } else if bytes.len() > 8 && bytes[8] == b'{' {
        // A safetensors header claiming more bytes than the file has: truncated.
        FileFormat::SafeTensors
    } else {
        FileFormat::Unknown
    }
}

/// Converts a checkpoint into weights: float32 tensors only, `num_batches_tracked` dropped.
fn from_checkpoint(bytes: &[u8], source: &str) -> Result<(Weights, pth::Checkpoint, Vec<String>)> {
    let ckpt = pth::parse(bytes).map_err(|e| weights_error(format!("{source}: {e}")))?;
    let mut w = Weights::new(source);
    let mut skipped = Vec::new();
    for t in &ckpt.tensors {
        if t.name.ends_with("num_batches_tracked") {
            skipped.push(t.name.clone());
            continue;
        }
        let Some(data) = &t.data else {
            return Err(weights_error(format!(
                "{source}: tensor '{}' is {}; only float32 weights are supported",
                t.name,
                t.dtype.name()
            )));
        };
        w.insert(t.name.clone(), t.shape.clone(), data.clone());
    }
    if let Some(epoch) = ckpt.epoch {
        w.metadata.insert(META_EPOCH.into(), epoch.to_string());
    }
    Ok((w, ckpt, skipped))
}

/// What [`import_pth`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    /// The network the weights were checked against.
    pub kind: NetworkKind,
    /// The `.pth` file read.
    pub input: PathBuf,
    /// The `.safetensors` file written.
    pub output: PathBuf,
    /// `"legacy torch (< 1.6)"` or `"zip torch (>= 1.6)"`.
    pub source_format: String,
    /// Tensors written.
    pub tensors: usize,
    /// Values written, over all tensors.
    pub values: usize,
    /// The checkpoint's epoch, when it records one.
    pub epoch: Option<i64>,
    /// Entries that were present but are not weights (`num_batches_tracked`).
    pub skipped: Vec<String>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imported {} weights from {} ({}): {} tensors, {} values",
            self.kind,
            self.input.display(),
            self.source_format,
            self.tensors,
            self.values
        )?;
        if let Some(e) = self.epoch {
            write!(f, ", epoch {e}")?;
        }
        if !self.skipped.is_empty() {
            write!(
                f,
                ", {} num_batches_tracked entries dropped",
                self.skipped.len()
            )?;
        }
        write!(f, " -> {}", self.output.display())
    }
}

/// Converts a PyTorch checkpoint (legacy or zip) to safetensors.
///
/// The model is detected from tensor names and shapes when `kind` is `None`; either way the
/// tensors are checked against it before anything is written. The output records the model, the
/// source file name and the epoch as metadata.
pub fn import_pth(input: &Path, output: &Path, kind: Option<NetworkKind>) -> Result<ImportReport> {
    let bytes = std::fs::read(input).map_err(|e| Error::io(input, e))?;
    let source = input.display().to_string();
    if sniff(&bytes) != FileFormat::Pth {
        return Err(weights_error(format!(
            "{source}: not a PyTorch checkpoint (expected a zip archive or a pickle stream)"
        )));
    }
    let (mut w, ckpt, skipped) = from_checkpoint(&bytes, &source)?;
    let kind = match kind {
        Some(k) => {
            k.check(&w)?;
            k
        }
        None => NetworkKind::detect(&w)?,
    };
    w.metadata.insert(META_MODEL.into(), kind.name().into());
    let file_name = input
        .file_name()
        .map_or_else(|| source.clone(), |n| n.to_string_lossy().into_owned());
    w.metadata.insert(META_SOURCE.into(), file_name);
    w.save(output)?;
    Ok(ImportReport {
        kind,
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        source_format: ckpt.format.describe().into(),
        tensors: w.tensors.len(),
        values: w.value_count(),
        epoch: ckpt.epoch,
        skipped,
    })
}

/// Summary statistics of a tensor's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorStats {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
    /// Mean value.
    pub mean: f32,
    /// Population standard deviation.
    pub std: f32,
}

impl TensorStats {
    fn of(data: &[f32]) -> Option<TensorStats> {
        if data.is_empty() {
            return None;
        }
        let n = data.len() as f64;
        let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        Some(TensorStats {
            min: data.iter().copied().fold(f32::INFINITY, f32::min),
            max: data.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            mean: mean as f32,
            std: var.sqrt() as f32,
        })
    }
}

/// One line of `wbs weights inspect`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// State-dict name.
    pub name: String,
    /// Shape in PyTorch order.
    pub shape: Vec<usize>,
    /// `"float32"`, `"int64"`, ...
    pub dtype: String,
    /// Number of values.
    pub count: usize,
    /// For float32 tensors.
    pub stats: Option<TensorStats>,
}

/// A whole weights file as `wbs weights inspect` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspection {
    /// `"safetensors"`, `"legacy torch (< 1.6)"` or `"zip torch (>= 1.6)"`.
    pub format: String,
    /// String metadata (safetensors `__metadata__`, or the checkpoint's epoch).
    pub metadata: BTreeMap<String, String>,
    /// The network the tensors fit, if any.
    pub model: Option<NetworkKind>,
    /// The tensors, names in natural order.
    pub tensors: Vec<TensorInfo>,
}

/// Lists the tensors of a `.safetensors` or `.pth` file (names in natural order).
pub fn inspect(path: &Path) -> Result<Vec<TensorInfo>> {
    Ok(inspect_file(path)?.tensors)
}

/// Like [`inspect`], plus the file format, metadata and the detected network.
pub fn inspect_file(path: &Path) -> Result<Inspection> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let source = path.display().to_string();
    let (format, metadata, mut tensors) = if sniff(&bytes) == FileFormat::Pth {
        let ckpt = pth::parse(&bytes).map_err(|e| weights_error(format!("{source}: {e}")))?;
        let mut meta = BTreeMap::new();
        if let Some(e) = ckpt.epoch {
            meta.insert("epoch".to_string(), e.to_string());
        }
        let infos: Vec<TensorInfo> = ckpt
            .tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                shape: t.shape.clone(),
                dtype: t.dtype.name().into(),
                count: t.shape.iter().product(),
                stats: t.data.as_deref().and_then(TensorStats::of),
            })
            .collect();
        (ckpt.format.describe().to_string(), meta, infos)
    } else {
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            weights_error(format!(
                "{source}: not a readable safetensors or .pth file ({e})"
            ))
        })?;
        let meta = SafeTensors::read_metadata(&bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        let infos = st
            .iter()
            .map(|(name, view)| {
                let f32_data: Option<Vec<f32>> = (view.dtype() == Dtype::F32).then(|| {
                    view.data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                });
                TensorInfo {
                    name: name.to_string(),
                    shape: view.shape().to_vec(),
                    dtype: safetensors_dtype_name(view.dtype()),
                    count: view.shape().iter().product(),
                    stats: f32_data.as_deref().and_then(TensorStats::of),
                }
            })
            .collect();
        ("safetensors".to_string(), meta, infos)
    };
    tensors.sort_by_key(|t| natural_key(&t.name));
    let model = {
        let mut w = Weights::new(source);
        for t in &tensors {
            // Shapes are all detection needs; values are not checked here.
            w.tensors.insert(
                t.name.clone(),
                Param {
                    shape: t.shape.clone(),
                    data: Vec::new(),
                },
            );
        }
        NetworkKind::ALL.into_iter().find(|k| {
            let expected = k.expected_tensors();
            expected.len() == w.tensors.len()
                && expected
                    .iter()
                    .all(|(n, s)| w.get(n).is_some_and(|t| &t.shape == s))
        })
    };
    Ok(Inspection {
        format,
        metadata,
        model,
        tensors,
    })
}

fn safetensors_dtype_name(d: Dtype) -> String {
    match d {
        Dtype::F32 => DType::F32.name().into(),
        Dtype::F64 => DType::F64.name().into(),
        Dtype::F16 => DType::F16.name().into(),
        Dtype::BF16 => DType::BF16.name().into(),
        Dtype::I64 => DType::I64.name().into(),
        Dtype::I32 => DType::I32.name().into(),
        Dtype::U8 => DType::U8.name().into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Sort key that orders `features.2` before `features.10`.
fn natural_key(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|part| match part.parse::<u64>() {
            Ok(n) => (n, String::new()),
            Err(_) => (u64::MAX, part.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same tensors and metadata give the same file, byte for byte, however the metadata's
    /// `HashMap` happens to order its keys; the file reads back unchanged.
    #[test]
    fn saved_files_are_byte_identical_and_read_back() {
        let mut w = Weights::default();
        w.tensors.insert(
            "b".into(),
            Param {
                shape: vec![3],
                data: vec![1.0, -2.5, 3.25],
            },
        );
        w.tensors.insert(
            "a.weight".into(),
            Param {
                shape: vec![1, 2],
                data: vec![0.5, 7.0],
            },
        );
        for k in 0..8 {
            w.metadata.insert(format!("key{k}"), format!("value {k}"));
        }
        let dir = std::env::temp_dir().join(format!("wbs-sorted-header-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let p = dir.join(format!("w{i}.safetensors"));
                w.save(&p).unwrap();
                std::fs::read(&p).unwrap()
            })
            .collect();
        let back = Weights::load(&dir.join("w0.safetensors"));
        std::fs::remove_dir_all(&dir).ok();
        assert!(files.iter().all(|f| *f == files[0]), "files differ");
        let len = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        assert_eq!((8 + len) % 8, 0, "data not 8-byte aligned");
        let back = back.unwrap();
        assert_eq!(back.tensors["b"].data, [1.0, -2.5, 3.25]);
        assert_eq!(back.tensors["a.weight"].shape, [1, 2]);
        assert_eq!(back.metadata["key7"], "value 7");
    }

    /// A safetensors file whose header is 0x280 bytes long starts with 0x80 0x02, a pickle's
    /// protocol-2 marker; it must still be read as safetensors (this once broke checkpoints).
    #[test]
    fn safetensors_header_length_with_a_pickle_like_first_byte() {
        let mut bytes = 0x280u64.to_le_bytes().to_vec();
        bytes.push(b'{');
        bytes.resize(8 + 0x280, b' ');
        assert_eq!(bytes[..2], [0x80, 0x02]);
        assert_eq!(sniff(&bytes), FileFormat::SafeTensors);
        // A real legacy torch pickle stays a pickle, a zip stays a zip.
        assert_eq!(
            sniff(b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19."),
            FileFormat::Pth
        );
        assert_eq!(sniff(b"PK\x03\x04rest"), FileFormat::Pth);
        assert_eq!(sniff(b"garbage!!"), FileFormat::Unknown);
    }

    #[test]
    fn natural_order() {
        let mut v = vec![
            "features.10.weight",
            "features.2.weight",
            "features.1.running_var",
        ];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(
            v,
            [
                "features.1.running_var",
                "features.2.weight",
                "features.10.weight"
            ]
        );
    }

    #[test]
    fn errors_stay_on_one_line() {
        let e = weights_error("bad name 'a\nb'").to_string();
        assert_eq!(e, "bad name 'a\u{FFFD}b'");
    }

    #[test]
    fn stats() {
        let s = TensorStats::of(&[1.0, 3.0]).unwrap();
        assert_eq!((s.min, s.max, s.mean, s.std), (1.0, 3.0, 2.0, 1.0));
        assert!(TensorStats::of(&[]).is_none());
    }
}
