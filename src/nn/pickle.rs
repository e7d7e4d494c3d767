//! A minimal pickle virtual machine with an allow-list, for PyTorch state dicts.
//!
//! Pickle is a stack machine whose GLOBAL and REDUCE opcodes can import and call any Python
//! function; that is why `torch.load` on an untrusted file can run code. This VM implements the
//! opcodes `torch.save` emits for state dicts, and a global resolves only to one of: an ordered
//! dict, the tensor rebuild functions, or a typed storage class. Anything else is refused before
//! it could mean anything. The result is plain data ([`Value`]) with tensors as references into
//! storages that the container format (`pth`) supplies.
//!
//! Robustness against hostile input: every read is bounds-checked, container nesting is capped
//! (so dropping a value cannot overflow the stack), and memo copies are counted (so repeated
//! references cannot blow up memory). Memo entries are snapshots taken at PUT time; torch files
//! never mutate a container after memoising and fetching it again.

use std::collections::HashMap;

/// Deepest container nesting accepted (a state dict needs about 4).
const MAX_DEPTH: u32 = 64;
/// Most value nodes that memo copies may create in one pickle.
const MAX_COPIED_NODES: u64 = 1 << 20;

/// Element types of torch storages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// From a legacy storage class name such as `FloatStorage`.
    fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    pub(crate) fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }
}

/// The only callables a pickle may name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    Storage(DType),
}

impl Global {
    /// The allow-list. Everything not named here is refused.
    fn resolve(module: &str, name: &str) -> Result<Global, String> {
        let global = match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("torch", class) => DType::from_storage_class(class).map(Global::Storage),
            _ => None,
        };
        global.ok_or_else(|| {
            let hint = if module.starts_with("__torch__") {
                " (a TorchScript or whole-model file: save model.state_dict() instead)"
            } else {
                ""
            };
            format!("refusing to load '{module}.{name}': only tensors and ordered dicts are allowed{hint}")
        })
    }
}

/// A storage named by a persistent id: its data lives outside the pickle.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StorageRef {
    pub key: String,
    pub dtype: DType,
    pub numel: usize,
}

/// A tensor as `_rebuild_tensor*` describes it: a strided view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A sequence with its nesting depth and node count cached, so limits cost O(1) per operation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Seq<T> {
    pub items: Vec<T>,
    depth: u32,
    nodes: u64,
}

impl<T> Default for Seq<T> {
    fn default() -> Self {
        Seq {
            items: Vec::new(),
            depth: 1,
            nodes: 0,
        }
    }
}

/// Unpickled data.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Seq<Value>),
    List(Seq<Value>),
    /// A dict or OrderedDict, items in insertion order (later duplicates win on lookup).
    Dict(Seq<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(s) | Value::List(s) => s.depth,
            Value::Dict(s) => s.depth,
            _ => 0,
        }
    }

    fn nodes(&self) -> u64 {
        1 + match self {
            Value::Tuple(s) | Value::List(s) => s.nodes,
            Value::Dict(s) => s.nodes,
            _ => 0,
        }
    }

    /// A dict value by string key (the last one if repeated).
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d
                .items
                .iter()
                .rev()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short description for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a class",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

impl Seq<Value> {
    fn from_items(items: Vec<Value>) -> Result<Self, String> {
        let mut s = Seq::default();
        for v in items {
            s.push(v)?;
        }
        Ok(s)
    }
    fn push(&mut self, v: Value) -> Result<(), String> {
        self.depth = self.depth.max(v.depth() + 1);
        if self.depth > MAX_DEPTH {
            return Err("pickle nests containers too deeply".into());
        }
        self.nodes += v.nodes();
        self.items.push(v);
        Ok(())
    }
}

impl Seq<(Value, Value)> {
    fn insert(&mut self, k: Value, v: Value) -> Result<(), String> {
        self.depth = self.depth.max(k.depth().max(v.depth()) + 1);
        if self.depth > MAX_DEPTH {
            return Err("pickle nests containers too deeply".into());
        }
        self.nodes += k.nodes() + v.nodes();
        self.items.push((k, v));
        Ok(())
    }
}

/// Runs one pickle starting at `start`; returns the value and the offset just past its STOP.
/// Errors are one line and carry the byte offset.
pub(crate) fn load(data: &[u8], start: usize) -> Result<(Value, usize), String> {
    let mut vm = Machine {
        data,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copied: 0,
    };
    let mut op_at = start;
    match vm.run(&mut op_at) {
        Ok(v) => Ok((v, vm.pos)),
        Err(e) => Err(format!("pickle error at byte {op_at}: {e}")),
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    copied: u64,
}

impl<'a> Machine<'a> {
    fn run(&mut self, op_at: &mut usize) -> Result<Value, String> {
        loop {
            *op_at = self.pos;
            let op = self.byte()?;
            match op {
                0x80 => {
                    self.byte()?; // PROTO n
                }
                0x95 => {
                    self.take(8)?; // FRAME length: framing is irrelevant in memory
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.count_copy(&v)?;
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let b = self.take(4)?;
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.stack.push(Value::Int(v as i128));
                }
                b'K' => {
                    let v = self.byte()?;
                    self.stack.push(Value::Int(v as i128));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack
                        .push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i128));
                }
                0x8a => {
                    let n = self.byte()? as usize;
                    let v = self.long(n)?;
                    self.stack.push(Value::Int(v));
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let v = self.long(n)?;
                    self.stack.push(Value::Int(v));
                }
                b'I' => {
                    let line = self.line()?;
                    let v = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(s.parse().map_err(|_| format!("bad INT '{s}'"))?),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'U' => {
                    let n = self.byte()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.utf8(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.byte()? as usize;
                    let s = self.utf8(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.u64_len()?;
                    let s = self.utf8(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'C' => {
                    let n = self.byte()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                0x8e => {
                    let n = self.u64_len()?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b')' => self.stack.push(Value::Tuple(Seq::default())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Seq::from_items(items)?));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < self.floor() + n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Seq::from_items(items)?));
                }
                b']' => self.stack.push(Value::List(Seq::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Seq::from_items(items)?));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.list_top()?.push(v)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.list_top()?;
                    for v in items {
                        list.push(v)?;
                    }
                }
                b'}' => self.stack.push(Value::Dict(Seq::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let mut d = Seq::default();
                    insert_pairs(&mut d, items)?;
                    self.stack.push(Value::Dict(d));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.dict_top()?.insert(k, v)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    insert_pairs(self.dict_top()?, items)?;
                }
                b'q' => {
                    let i = self.byte()? as u32;
                    self.put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                    self.put(i)?;
                }
                b'p' => {
                    let i = self.line()?.parse().map_err(|_| "bad PUT index")?;
                    self.put(i)?;
                }
                b'h' => {
                    let i = self.byte()? as u32;
                    self.get(i)?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.get(i)?;
                }
                b'g' => {
                    let i = self.line()?.parse().map_err(|_| "bad GET index")?;
                    self.get(i)?;
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.stack
                        .push(Value::Global(Global::resolve(&module, &name)?));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.stack.push(Value::Global(Global::resolve(&m, &n)?))
                        }
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = call(callable, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let _args = self.pop()?;
                    match self.pop()? {
                        Value::Global(Global::OrderedDict) => {
                            self.stack.push(Value::Dict(Seq::default()))
                        }
                        other => {
                            return Err(format!("refusing NEWOBJ on {}", other.kind()));
                        }
                    }
                }
                b'b' => {
                    // BUILD sets object state; an OrderedDict's state is its `_metadata`
                    // attribute (module versions), which inference does not need.
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => return Err(format!("refusing BUILD on {}", other.kind())),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_load(pid)?;
                    self.stack.push(Value::Storage(storage));
                }
                _ => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{op:02x}{}",
                        if op.is_ascii_graphic() {
                            format!(" ('{}')", op as char)
                        } else {
                            String::new()
                        }
                    ))
                }
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| "unexpected end of data (file truncated?)".to_string())?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64_len(&mut self) -> Result<usize, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| "length out of range".to_string())
    }
    fn utf8(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8 string".to_string())
    }
    /// A newline-terminated ASCII argument of the text opcodes.
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or_else(|| "unterminated text argument".to_string())?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "non-text argument".to_string())?;
        self.pos += n + 1;
        Ok(s.trim_end_matches('\r'))
    }
    /// LONG1/LONG4: little-endian two's complement of `n` bytes.
    fn long(&mut self, n: usize) -> Result<i128, String> {
        if n > 16 {
            return Err(format!("integer of {n} bytes is too large"));
        }
        let b = self.take(n)?;
        if n == 0 {
            return Ok(0);
        }
        let fill = if b[n - 1] & 0x80 != 0 { 0xFF } else { 0 };
        let mut a = [fill; 16];
        a[..n].copy_from_slice(b);
        Ok(i128::from_le_bytes(a))
    }

    /// Lowest stack index the current MARK level may pop to.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }
    fn pop(&mut self) -> Result<Value, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }
    fn top(&self) -> Result<&Value, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        self.stack
            .last()
            .ok_or_else(|| "stack underflow".to_string())
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| "no MARK on the stack".to_string())?;
        if mark > self.stack.len() {
            return Err("stack underflow".into());
        }
        Ok(self.stack.split_off(mark))
    }
    fn list_top(&mut self) -> Result<&mut Seq<Value>, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        match self.stack.last_mut() {
            Some(Value::List(l)) => Ok(l),
            Some(other) => Err(format!("APPEND to {}", other.kind())),
            None => Err("stack underflow".into()),
        }
    }
    fn dict_top(&mut self) -> Result<&mut Seq<(Value, Value)>, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        match self.stack.last_mut() {
            Some(Value::Dict(d)) => Ok(d),
            Some(other) => Err(format!("SETITEM on {}", other.kind())),
            None => Err("stack underflow".into()),
        }
    }
    fn count_copy(&mut self, v: &Value) -> Result<(), String> {
        self.copied += v.nodes();
        if self.copied > MAX_COPIED_NODES {
            return Err("pickle repeats references too often (refusing to expand it)".into());
        }
        Ok(())
    }
    fn put(&mut self, i: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.count_copy(&v)?;
        self.memo.insert(i, v);
        Ok(())
    }
    fn get(&mut self, i: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("memo key {i} is not defined"))?;
        self.count_copy(&v)?;
        self.stack.push(v);
        Ok(())
    }
}

fn insert_pairs(d: &mut Seq<(Value, Value)>, items: Vec<Value>) -> Result<(), String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of dict items".into());
    }
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        d.insert(k, v)?;
    }
    Ok(())
}

/// A non-negative int that fits comfortably in memory arithmetic.
fn index(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if (0..1 << 48).contains(i) => Ok(*i as usize),
        Value::Int(i) => Err(format!("{what} {i} is out of range")),
        other => Err(format!("{what} is {}, expected an int", other.kind())),
    }
}

fn indices(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(t) | Value::List(t) => t.items.iter().map(|x| index(x, what)).collect(),
        other => Err(format!(
            "tensor {what} is {}, expected a tuple",
            other.kind()
        )),
    }
}

/// REDUCE: the only calls allowed build dicts and tensors.
fn call(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Tuple(args) = args else {
        return Err(format!(
            "REDUCE arguments are {}, expected a tuple",
            args.kind()
        ));
    };
    let args = args.items;
    let global = match callable {
        Value::Global(g) => g,
        other => return Err(format!("refusing to call {}", other.kind())),
    };
    match global {
        Global::OrderedDict => {
            let mut d = Seq::default();
            match args.as_slice() {
                [] => {}
                [Value::List(pairs)] => {
                    for p in &pairs.items {
                        match p {
                            // Python 2's OrderedDict pickles its items as [key, value] lists.
                            Value::Tuple(t) | Value::List(t) if t.items.len() == 2 => {
                                d.insert(t.items[0].clone(), t.items[1].clone())?
                            }
                            _ => return Err("OrderedDict items must be pairs".into()),
                        }
                    }
                }
                _ => return Err("unexpected OrderedDict arguments".into()),
            }
            Ok(Value::Dict(d))
        }
        Global::RebuildTensor | Global::RebuildTensorV2 => {
            if args.len() < 4 {
                return Err("tensor rebuild needs storage, offset, size and stride".into());
            }
            let Value::Storage(storage) = &args[0] else {
                return Err(format!("tensor storage is {}", args[0].kind()));
            };
            let offset = index(&args[1], "storage offset")?;
            let size = indices(&args[2], "size")?;
            let stride = indices(&args[3], "stride")?;
            if size.len() != stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            Ok(Value::Tensor(TensorRef {
                storage: storage.clone(),
                offset,
                size,
                stride,
            }))
        }
        Global::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("parameter rebuild needs a tensor".into()),
        },
        Global::Storage(_) => Err("refusing to call a storage class".into()),
    }
}

/// BINPERSID `('storage', <StorageClass>, key, location, numel[, view])`; location is ignored
/// (everything loads on the CPU).
fn persistent_load(pid: Value) -> Result<StorageRef, String> {
    let Value::Tuple(t) = pid else {
        return Err(format!("persistent id is {}, expected a tuple", pid.kind()));
    };
    let items = &t.items;
    if items.len() < 5 || items[0] != Value::Str("storage".into()) {
        return Err("persistent id is not a torch storage".into());
    }
    let Value::Global(Global::Storage(dtype)) = items[1] else {
        return Err(format!("storage type is {}", items[1].kind()));
    };
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is {}", other.kind())),
    };
    let numel = index(&items[4], "storage size")?;
    if items.get(5).is_some_and(|v| *v != Value::None) {
        return Err("storage views (torch < 0.4 shared storages) are not supported".into());
    }
    Ok(StorageRef { key, dtype, numel })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Value, String> {
        load(bytes, 0).map(|(v, _)| v)
    }

    #[test]
    fn ints_and_longs() {
        assert_eq!(run(b"\x80\x02K\x05.").unwrap(), Value::Int(5));
        assert_eq!(run(b"\x80\x02\x8a\x01\xf0.").unwrap(), Value::Int(-16));
        assert_eq!(run(b"\x80\x02\x8a\x01\x10.").unwrap(), Value::Int(16));
        assert_eq!(run(b"\x80\x02J\xff\xff\xff\xff.").unwrap(), Value::Int(-1));
    }

    #[test]
    fn dict_with_memo() {
        let v = run(b"\x80\x02}q\x00(U\x01aK\x01U\x01bh\x00u.").unwrap();
        assert_eq!(v.get("a"), Some(&Value::Int(1)));
        assert!(matches!(v.get("b"), Some(Value::Dict(_))));
    }

    #[test]
    fn code_execution_is_refused() {
        let e = run(b"cos\nsystem\n(U\x02lstR.").unwrap_err();
        assert!(e.contains("refusing to load 'os.system'"), "{e}");
        let e = run(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.").unwrap_err();
        assert!(e.contains("builtins.eval"), "{e}");
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b""[..],
            b"\x80",
            b"\x80\x02",
            b"0.",
            b"(t0000.",
            b"a.",
            b"h\x07.",
            b"\x8b\xff\xff\xff\xff",
            b"X\xff\xff\xff\x7fabc",
            b"\xff",
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = vec![b']'; 10_000];
        p.extend(std::iter::repeat_n(b'a', 9_999));
        p.push(b'.');
        assert!(run(&p).unwrap_err().contains("deeply"));
    }

    #[test]
    fn memo_bombs_are_refused() {
        // l = [0]*8; then repeatedly l = [l, l, l, l, l, l, l, l]
        let mut p = b"(KaKaKaKaKaKaKaKal".to_vec();
        for _ in 0..12 {
            p.extend_from_slice(b"q\x00(h\x00h\x00h\x00h\x00h\x00h\x00h\x00h\x00l");
        }
        p.push(b'.');
        assert!(run(&p).unwrap_err().contains("repeats references"));
    }
}
