//! PyTorch checkpoint (`.pth`) containers: the legacy pre-1.6 stream and the zip archive of
//! newer versions. Both hold one pickle (run by the allow-listed VM in `pickle`) plus raw
//! storage bytes; this module pairs them up into named tensors.
//!
//! Legacy layout (`AffNet.pth`, `OriNet.pth`): five pickles in a row (magic number, protocol
//! 1001, system info, the checkpoint object, the list of storage keys), then per key an int64 LE
//! element count and the raw little-endian elements. Zip layout: `<archive>/data.pkl` and one
//! `<archive>/data/<key>` entry per storage.

use std::collections::HashMap;

use super::pickle::{self, DType, StorageRef, TensorRef, Value};
use super::zip::Archive;

const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// Which container a checkpoint came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Legacy,
    Zip,
}

impl Format {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Format::Legacy => "legacy torch (< 1.6)",
            Format::Zip => "zip torch (>= 1.6)",
        }
    }
}

/// One state_dict entry. `data` is filled for float32 tensors only, the one type the networks use.
#[derive(Clone, Debug)]
pub(crate) struct PthTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Option<Vec<f32>>,
}

/// A parsed checkpoint.
#[derive(Clone, Debug)]
pub(crate) struct Checkpoint {
    pub format: Format,
    /// In state_dict order, with any `module.` prefix removed.
    pub tensors: Vec<PthTensor>,
    /// The checkpoint's `epoch` entry, when it has one.
    pub epoch: Option<i64>,
}

/// Parses a checkpoint from its bytes. Errors are one line, without the file name.
pub(crate) fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        parse_zip(bytes)
    } else if bytes.first() == Some(&0x80) {
        parse_legacy(bytes)
    } else {
        Err("not a PyTorch checkpoint (neither a zip archive nor a pickle stream)".into())
    }
}

fn parse_legacy(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (magic, pos) = pickle::load(bytes, 0)?;
    if magic != Value::Int(LEGACY_MAGIC) {
        return Err("not a PyTorch checkpoint (wrong magic number)".into());
    }
    let (protocol, pos) = pickle::load(bytes, pos)?;
    if protocol != Value::Int(LEGACY_PROTOCOL) {
        return Err(format!(
            "unsupported legacy torch protocol ({} instead of 1001)",
            protocol.kind()
        ));
    }
    let (sys_info, pos) = pickle::load(bytes, pos)?;
    if sys_info.get("little_endian") == Some(&Value::Bool(false)) {
        return Err("big-endian checkpoints are not supported".into());
    }
    let (object, pos) = pickle::load(bytes, pos)?;
    let (keys, mut pos) = pickle::load(bytes, pos)?;
    let Value::List(keys) = keys else {
        return Err("storage key list is missing".into());
    };

    let (entries, epoch) = state_dict(&object)?;
    let referenced = storages(&entries);
    let mut data: HashMap<String, &[u8]> = HashMap::new();
    for key in &keys.items {
        let Value::Str(key) = key else {
            return Err("storage key list holds a non-string".into());
        };
        let storage = referenced
            .get(key.as_str())
            .ok_or_else(|| format!("storage '{key}' is not used by any tensor"))?;
        let count = bytes
            .get(pos..pos + 8)
            .ok_or("file truncated in storage data")?;
        let count = i64::from_le_bytes(count.try_into().map_err(|_| "bad count")?);
        if usize::try_from(count).ok() != Some(storage.numel) {
            return Err(format!(
                "storage '{key}' holds {count} elements, its tensors say {}",
                storage.numel
            ));
        }
        let len = storage
            .numel
            .checked_mul(storage.dtype.size())
            .ok_or("storage too large")?;
        let start = pos + 8;
        let raw = bytes
            .get(start..start.checked_add(len).ok_or("storage too large")?)
            .ok_or("file truncated in storage data")?;
        data.insert(key.clone(), raw);
        pos = start + len;
    }
    if pos != bytes.len() {
        return Err(format!(
            "{} unexpected bytes after the last storage (file corrupt?)",
            bytes.len() - pos
        ));
    }
    Ok(Checkpoint {
        format: Format::Legacy,
        tensors: resolve(entries, &data)?,
        epoch,
    })
}

fn parse_zip(bytes: &[u8]) -> Result<Checkpoint, String> {
    let archive = Archive::parse(bytes)?;
    let pkl = archive
        .entries
        .iter()
        .find(|e| e.name.ends_with("data.pkl") && e.name.matches('/').count() <= 1)
        .ok_or_else(|| {
            if archive
                .entries
                .iter()
                .any(|e| e.name.ends_with("constants.pkl"))
            {
                "a TorchScript archive, not a checkpoint: save model.state_dict() with torch.save"
                    .to_string()
            } else {
                "zip archive has no data.pkl (not a PyTorch checkpoint)".to_string()
            }
        })?;
    let prefix = &pkl.name[..pkl.name.len() - "data.pkl".len()];
    if let Some(order) = archive.find(&format!("{prefix}byteorder")) {
        if archive.read(order)? != b"little" {
            return Err("big-endian checkpoints are not supported".into());
        }
    }
    let (object, _) = pickle::load(archive.read(pkl)?, 0)?;
    let (entries, epoch) = state_dict(&object)?;
    let mut data: HashMap<String, &[u8]> = HashMap::new();
    for (key, storage) in storages(&entries) {
        let name = format!("{prefix}data/{key}");
        let entry = archive
            .find(&name)
            .ok_or_else(|| format!("storage entry '{name}' is missing"))?;
        let raw = archive.read(entry)?;
        if Some(raw.len()) != storage.numel.checked_mul(storage.dtype.size()) {
            return Err(format!(
                "storage '{key}' has {} bytes, expected {} {} values",
                raw.len(),
                storage.numel,
                storage.dtype.name()
            ));
        }
        data.insert(key.to_string(), raw);
    }
    Ok(Checkpoint {
        format: Format::Zip,
        tensors: resolve(entries, &data)?,
        epoch,
    })
}

/// Named tensor references in state_dict order.
type Entries = Vec<(String, TensorRef)>;

/// Finds the state dict: the object itself, or its `state_dict` / `model` entry.
fn state_dict(object: &Value) -> Result<(Entries, Option<i64>), String> {
    let epoch = match object.get("epoch") {
        Some(Value::Int(e)) => i64::try_from(*e).ok(),
        _ => None,
    };
    let dict = ["state_dict", "model", "model_state_dict"]
        .iter()
        .find_map(|k| object.get(k).filter(|v| matches!(v, Value::Dict(_))))
        .unwrap_or(object);
    let Value::Dict(d) = dict else {
        return Err(format!(
            "the checkpoint holds {}, expected a state_dict (an ordered dict of tensors)",
            object.kind()
        ));
    };
    let mut out: Entries = Vec::new();
    for (k, v) in &d.items {
        let Value::Str(name) = k else {
            return Err(format!("state_dict key is {}, expected a string", k.kind()));
        };
        let Value::Tensor(t) = v else {
            return Err(format!(
                "state_dict entry '{name}' is {}, expected a tensor (is this a state_dict?)",
                v.kind()
            ));
        };
        let name = name.strip_prefix("module.").unwrap_or(name).to_string();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = t.clone(),
            None => out.push((name, t.clone())),
        }
    }
    if out.is_empty() {
        return Err("the checkpoint holds no tensors".into());
    }
    Ok((out, epoch))
}

/// The distinct storages the tensors use; conflicting descriptions are an error later.
fn storages(entries: &[(String, TensorRef)]) -> HashMap<&str, &StorageRef> {
    let mut map = HashMap::new();
    for (_, t) in entries {
        map.entry(t.storage.key.as_str()).or_insert(&t.storage);
    }
    map
}

/// Reads every tensor's values out of its storage bytes, following offset and strides.
fn resolve(
    entries: Vec<(String, TensorRef)>,
    data: &HashMap<String, &[u8]>,
) -> Result<Vec<PthTensor>, String> {
    let known = storages(&entries)
        .into_iter()
        .map(|(k, s)| (k.to_string(), s.clone()))
        .collect::<HashMap<_, _>>();
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let storage = &t.storage;
        if known.get(&storage.key) != Some(storage) {
            return Err(format!(
                "tensor '{name}': storage '{}' is described inconsistently",
                storage.key
            ));
        }
        let raw = data
            .get(&storage.key)
            .ok_or_else(|| format!("tensor '{name}': storage '{}' has no data", storage.key))?;
        let numel = t
            .size
            .iter()
            .try_fold(1usize, |a, &s| a.checked_mul(s))
            .ok_or_else(|| format!("tensor '{name}' is too large"))?;
        if numel > storage.numel {
            return Err(format!(
                "tensor '{name}' has more elements than its storage (expanded views are not supported)"
            ));
        }
        if numel > 0 {
            // The furthest element the view touches must lie inside the storage.
            let last = t
                .size
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |a, (&s, &st)| {
                    a.checked_add((s - 1).checked_mul(st)?)
                })
                .ok_or_else(|| format!("tensor '{name}' has an invalid layout"))?;
            if last >= storage.numel {
                return Err(format!(
                    "tensor '{name}' reaches element {last} of a {}-element storage",
                    storage.numel
                ));
            }
        }
        let values = if storage.dtype == DType::F32 {
            Some(gather_f32(raw, t.offset, &t.size, &t.stride, numel))
        } else {
            None
        };
        out.push(PthTensor {
            name,
            dtype: storage.dtype,
            shape: t.size,
            data: values,
        });
    }
    Ok(out)
}

/// Row-major copy of a strided view (offset and strides already bounds-checked).
fn gather_f32(
    raw: &[u8],
    offset: usize,
    size: &[usize],
    stride: &[usize],
    numel: usize,
) -> Vec<f32> {
    let at = |i: usize| {
        let b = &raw[4 * i..4 * i + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return out;
    }
    let contiguous = {
        let mut expect = 1;
        size.iter().zip(stride).rev().all(|(&s, &st)| {
            let ok = s == 1 || st == expect;
            expect *= s;
            ok
        })
    };
    if contiguous {
        out.extend((offset..offset + numel).map(at));
        return out;
    }
    let mut idx = vec![0usize; size.len()];
    for _ in 0..numel {
        let flat = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(at(flat));
        for d in (0..size.len()).rev() {
            idx[d] += 1;
            if idx[d] < size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_transposed_view() {
        let raw: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        // A 3×2 view of a 2×3 row-major storage: the transpose.
        assert_eq!(
            gather_f32(&raw, 0, &[3, 2], &[1, 3], 6),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        assert_eq!(gather_f32(&raw, 2, &[2], &[1], 2), vec![2.0, 3.0]);
    }

    #[test]
    fn broadcast_views_are_refused() {
        let storage = StorageRef {
            key: "0".into(),
            dtype: DType::F32,
            numel: 1,
        };
        let t = TensorRef {
            storage,
            offset: 0,
            size: vec![1 << 40],
            stride: vec![0],
        };
        let raw = [0u8; 4];
        let data = HashMap::from([("0".to_string(), &raw[..])]);
        let e = resolve(vec![("x".into(), t)], &data).unwrap_err();
        assert!(e.contains("more elements than its storage"), "{e}");
    }

    #[test]
    fn rejects_non_checkpoints() {
        assert!(parse(b"hello").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"\x80\x02K\x01.").unwrap_err().contains("magic"));
    }
}
