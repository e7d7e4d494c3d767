//! Helpers shared by the `nn_*` integration tests: where `../shared` is, temporary files, and a
//! tiny writer of PyTorch checkpoints (legacy and zip) for synthetic test files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[path = "../skip/mod.rs"]
pub mod skip;

/// `../shared` beside the checkout, or `None` after [`skip::missing`] (a visible SKIP line; a
/// failure under CI).
pub fn shared_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if p.join("weights/golden.json").is_file() {
        Some(p)
    } else {
        skip::missing(&format!("{}", p.join("weights/golden.json").display()));
        None
    }
}

/// Returns early from a test when `../shared` is absent (a visible SKIP line; a failure under
/// CI).
#[macro_export]
macro_rules! shared_or_skip {
    () => {
        match nn_support::shared_dir() {
            Some(p) => p,
            None => return,
        }
    };
}

/// A fresh directory for one test's files, under cargo's `target/tmp` (emptied at the start of
/// each run and kept after it for a look, so runs do not pile up in the system temp dir).
pub fn temp_dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}-{test}", env!("CARGO_CRATE_NAME")));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// How a tensor is laid out in its storage.
#[derive(Clone, Debug)]
pub enum Layout {
    /// Own storage, contiguous, offset 0.
    Contiguous,
    /// Own storage with the first axis innermost (strides `(1, …)`): a non-contiguous view.
    FirstAxisInnermost,
    /// Shares storage `key` at `offset` (contiguous).
    Shared { key: String, offset: usize },
}

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct TestTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub layout: Layout,
    /// Torch storage class: `FloatStorage` (default), `LongStorage`, `HalfStorage`.
    pub class: &'static str,
}

impl TestTensor {
    pub fn new(name: &str, shape: Vec<usize>, data: Vec<f32>) -> Self {
        TestTensor {
            name: name.into(),
            shape,
            data,
            layout: Layout::Contiguous,
            class: "FloatStorage",
        }
    }
}

/// A checkpoint to write: `{'epoch': e, '<container>': OrderedDict}` or a bare OrderedDict.
#[derive(Clone, Debug)]
pub struct TestCheckpoint {
    pub tensors: Vec<TestTensor>,
    /// `Some("state_dict")` (default) or `Some("model")`; `None` for a bare state dict.
    pub container: Option<&'static str>,
    /// Prepended to every name (`"module."` mimics DataParallel).
    pub prefix: &'static str,
    pub epoch: Option<i64>,
}

impl TestCheckpoint {
    pub fn new(tensors: Vec<TestTensor>) -> Self {
        TestCheckpoint {
            tensors,
            container: Some("state_dict"),
            prefix: "",
            epoch: Some(20),
        }
    }

    /// From weights (names in their order, contiguous float32).
    pub fn from_weights(w: &wbs::nn::Weights) -> Self {
        TestCheckpoint::new(
            w.tensors
                .iter()
                .map(|(n, p)| TestTensor::new(n, p.shape.clone(), p.data.clone()))
                .collect(),
        )
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut TestTensor {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }
}

/// Pickle opcodes, protocol 2.
pub struct Pickle(pub Vec<u8>);

impl Pickle {
    pub fn new() -> Self {
        Pickle(vec![0x80, 2])
    }
    pub fn op(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        if (0..256).contains(&v) {
            self.0.extend_from_slice(&[b'K', v as u8]);
        } else {
            self.0.extend_from_slice(&[0x8a, 8]);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }
    pub fn ints(&mut self, v: &[usize]) -> &mut Self {
        self.op(b'(');
        for &x in v {
            self.int(x as i64);
        }
        self.op(b't')
    }
    pub fn finish(&mut self) -> Vec<u8> {
        self.0.push(b'.');
        std::mem::take(&mut self.0)
    }
}

/// Storage key → (class, values), in first-use order.
pub type Storages = Vec<(String, &'static str, Vec<f32>)>;

/// Element bytes of a storage class.
fn encode(class: &str, data: &[f32]) -> Vec<u8> {
    match class {
        "FloatStorage" => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "LongStorage" => data
            .iter()
            .flat_map(|v| (*v as i64).to_le_bytes())
            .collect(),
        "HalfStorage" => data.iter().flat_map(|_| [0u8, 0x3c]).collect(),
        other => panic!("no encoder for {other}"),
    }
}

/// The storages and (offset, stride) of each tensor under its layout.
fn plan_storages(tensors: &[TestTensor]) -> (Storages, Vec<(String, usize, Vec<usize>)>) {
    let mut storages: Storages = Vec::new();
    let mut views = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let contiguous: Vec<usize> = (0..t.shape.len())
            .map(|d| t.shape[d + 1..].iter().product())
            .collect();
        match &t.layout {
            Layout::Contiguous => {
                storages.push((i.to_string(), t.class, t.data.clone()));
                views.push((i.to_string(), 0, contiguous));
            }
            Layout::FirstAxisInnermost => {
                let a = t.shape[0];
                let rest: usize = t.shape[1..].iter().product();
                let mut s = vec![0.0; t.data.len()];
                for i0 in 0..a {
                    for j in 0..rest {
                        s[j * a + i0] = t.data[i0 * rest + j];
                    }
                }
                let mut stride = vec![1];
                stride.extend(contiguous[1..].iter().map(|c| c * a));
                storages.push((i.to_string(), t.class, s));
                views.push((i.to_string(), 0, stride));
            }
            Layout::Shared { key, offset } => {
                let pos = match storages.iter().position(|(k, _, _)| k == key) {
                    Some(p) => p,
                    None => {
                        storages.push((key.clone(), t.class, Vec::new()));
                        storages.len() - 1
                    }
                };
                let s = &mut storages[pos].2;
                if s.len() < offset + t.data.len() {
                    s.resize(offset + t.data.len(), 0.0);
                }
                s[*offset..offset + t.data.len()].copy_from_slice(&t.data);
                views.push((key.clone(), *offset, contiguous));
            }
        }
    }
    (storages, views)
}

/// The checkpoint object pickle.
fn checkpoint_pickle(
    c: &TestCheckpoint,
    storages: &Storages,
    views: &[(String, usize, Vec<usize>)],
    legacy: bool,
) -> Vec<u8> {
    let mut p = Pickle::new();
    if let Some(container) = c.container {
        p.op(b'}').op(b'(');
        if let Some(e) = c.epoch {
            p.str("epoch").int(e);
        }
        p.str(container);
    }
    p.global("collections", "OrderedDict")
        .op(b')')
        .op(b'R')
        .op(b'(');
    for (t, (key, offset, stride)) in c.tensors.iter().zip(views) {
        let numel = storages
            .iter()
            .find(|(k, _, _)| k == key)
            .map_or(0, |(_, _, d)| d.len());
        p.str(&format!("{}{}", c.prefix, t.name));
        p.global(
            "torch._utils",
            if legacy {
                "_rebuild_tensor"
            } else {
                "_rebuild_tensor_v2"
            },
        );
        p.op(b'(');
        p.op(b'(').str("storage").global("torch", t.class).str(key);
        p.str(if legacy { "cuda:0" } else { "cpu" })
            .int(numel as i64);
        if legacy {
            p.op(b'N');
        }
        p.op(b't').op(b'Q');
        p.int(*offset as i64).ints(&t.shape).ints(stride);
        if !legacy {
            p.op(0x89)
                .global("collections", "OrderedDict")
                .op(b')')
                .op(b'R');
        }
        p.op(b't').op(b'R');
    }
    p.op(b'u');
    if c.container.is_some() {
        p.op(b'u');
    }
    p.finish()
}

/// A legacy (pre-1.6) checkpoint: five pickles, then the storages.
pub fn legacy_pth(c: &TestCheckpoint) -> Vec<u8> {
    let (storages, views) = plan_storages(&c.tensors);
    legacy_pth_with_object(&storages, checkpoint_pickle(c, &storages, &views, true))
}

/// A legacy container around an arbitrary object pickle.
pub fn legacy_pth_with_object(storages: &Storages, object: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut magic = Pickle::new();
    magic.op(0x8a).op(10);
    magic
        .0
        .extend_from_slice(&0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10]);
    out.extend(magic.finish());
    out.extend(Pickle::new().op(b'M').op(0xE9).op(0x03).finish());
    out.extend(
        Pickle::new()
            .op(b'}')
            .op(b'(')
            .str("little_endian")
            .op(0x88)
            .op(b'u')
            .finish(),
    );
    out.extend(object);
    let mut keys = Pickle::new();
    keys.op(b']').op(b'(');
    for (k, _, _) in storages {
        keys.str(k);
    }
    out.extend(keys.op(b'e').finish());
    for (_, class, data) in storages {
        out.extend((data.len() as i64).to_le_bytes());
        out.extend(encode(class, data));
    }
    out
}

/// A zip (torch >= 1.6) checkpoint with stored entries under `archive/`.
pub fn zip_pth(c: &TestCheckpoint) -> Vec<u8> {
    let (storages, views) = plan_storages(&c.tensors);
    zip_pth_with_object(&storages, checkpoint_pickle(c, &storages, &views, false))
}

/// A zip container around an arbitrary `data.pkl`.
pub fn zip_pth_with_object(storages: &Storages, object: Vec<u8>) -> Vec<u8> {
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        ("archive/data.pkl".into(), object),
        ("archive/byteorder".into(), b"little".to_vec()),
    ];
    for (k, class, data) in storages {
        entries.push((format!("archive/data/{k}"), encode(class, data)));
    }
    entries.push(("archive/version".into(), b"3\n".to_vec()));
    zip_stored(&entries, 0)
}

/// A zip archive with every entry stored (or claiming `method` if non-zero).
pub fn zip_stored(entries: &[(String, Vec<u8>)], method: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes());
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(method.to_le_bytes());
            h.extend([0u8; 4]); // time, date
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            if central {
                h.extend([0u8; 6]); // comment length, disk, internal attributes
                h.extend([0u8; 4]); // external attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend(data);
        central.extend(header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A 32×32 patch from a predicate on (row, column).
pub fn patch_from(f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    (0..32 * 32).map(|i| f(i / 32, i % 32)).collect()
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}
