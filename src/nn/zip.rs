//! A minimal zip reader for PyTorch ≥ 1.6 checkpoints: stored (uncompressed) entries only.
//!
//! `torch.save` writes its archive with every entry stored, so this is all the project needs; a
//! compressed entry (someone re-zipped the file) gets a clear error instead of a dependency.
//! Every offset and length is checked against the buffer, and each entry's CRC-32 is verified so
//! that a corrupted file fails here rather than loading wrong numbers.

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// One member of the archive, as listed in the central directory.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub name: String,
    method: u16,
    flags: u16,
    crc: u32,
    compressed_size: u64,
    size: u64,
    local_offset: u64,
}

/// A parsed archive borrowing the file's bytes.
pub(crate) struct Archive<'a> {
    data: &'a [u8],
    pub entries: Vec<Entry>,
}

/// Little-endian reads with bounds checks; every failure is "truncated or corrupt".
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn at(data: &'a [u8], pos: u64) -> Result<Self, String> {
        let pos = usize::try_from(pos).map_err(|_| "zip offset out of range".to_string())?;
        if pos > data.len() {
            return Err(format!("zip offset {pos} is past the end of the file"));
        }
        Ok(Cursor { data, pos })
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| "zip archive is truncated".to_string())?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

impl<'a> Archive<'a> {
    /// Reads the central directory.
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, String> {
        let eocd = find_eocd(data)?;
        let mut c = Cursor::at(data, eocd as u64 + 4)?;
        let _disk = c.u16()?;
        let _cd_disk = c.u16()?;
        let _entries_here = c.u16()?;
        let mut count = c.u16()? as u64;
        let _cd_size = c.u32()?;
        let mut cd_offset = c.u32()? as u64;
        if count == 0xFFFF || cd_offset == 0xFFFF_FFFF {
            (count, cd_offset) = read_zip64_eocd(data, eocd)?;
        }
        // Each central record is at least 46 bytes; a larger count cannot be genuine.
        if count > (data.len() / 46) as u64 {
            return Err(format!("zip directory claims {count} entries"));
        }
        let mut c = Cursor::at(data, cd_offset)?;
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            if c.u32()? != CENTRAL_SIG {
                return Err("zip central directory is corrupt".into());
            }
            let _made_by = c.u16()?;
            let _needed = c.u16()?;
            let flags = c.u16()?;
            let method = c.u16()?;
            let _time = c.u16()?;
            let _date = c.u16()?;
            let crc = c.u32()?;
            let mut compressed_size = c.u32()? as u64;
            let mut size = c.u32()? as u64;
            let name_len = c.u16()? as usize;
            let extra_len = c.u16()? as usize;
            let comment_len = c.u16()? as usize;
            let _disk_start = c.u16()?;
            let _internal = c.u16()?;
            let _external = c.u32()?;
            let mut local_offset = c.u32()? as u64;
            let name = String::from_utf8_lossy(c.bytes(name_len)?).into_owned();
            let extra = c.bytes(extra_len)?;
            c.bytes(comment_len)?;
            apply_zip64_extra(extra, &mut size, &mut compressed_size, &mut local_offset)?;
            entries.push(Entry {
                name,
                method,
                flags,
                crc,
                compressed_size,
                size,
                local_offset,
            });
        }
        Ok(Archive { data, entries })
    }

    pub(crate) fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The bytes of a stored entry, CRC-checked.
    pub(crate) fn read(&self, entry: &Entry) -> Result<&'a [u8], String> {
        if entry.flags & 1 != 0 {
            return Err(format!("zip entry '{}' is encrypted", entry.name));
        }
        if entry.method != 0 {
            return Err(format!(
                "zip entry '{}' is compressed (method {}); only stored entries, as torch.save writes them, are supported",
                entry.name, entry.method
            ));
        }
        if entry.compressed_size != entry.size {
            return Err(format!("zip entry '{}' has inconsistent sizes", entry.name));
        }
        let mut c = Cursor::at(self.data, entry.local_offset)?;
        if c.u32()? != LOCAL_SIG {
            return Err(format!(
                "zip entry '{}' has a corrupt local header",
                entry.name
            ));
        }
        c.bytes(22)?;
        let name_len = c.u16()? as usize;
        let extra_len = c.u16()? as usize;
        c.bytes(name_len + extra_len)?;
        let size = usize::try_from(entry.size).map_err(|_| "zip entry too large".to_string())?;
        let bytes = c.bytes(size)?;
        if crc32(bytes) != entry.crc {
            return Err(format!(
                "zip entry '{}' fails its CRC check (the file is corrupt)",
                entry.name
            ));
        }
        Ok(bytes)
    }
}

/// The end-of-central-directory record is in the last 64 KiB + 22 bytes.
fn find_eocd(data: &[u8]) -> Result<usize, String> {
    if data.len() < 22 {
        return Err("zip archive is truncated (no end-of-directory record)".into());
    }
    let lowest = data.len().saturating_sub(22 + 0xFFFF);
    (lowest..=data.len() - 22)
        .rev()
        .find(|&i| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) == EOCD_SIG)
        .ok_or_else(|| "zip archive is truncated (no end-of-directory record)".to_string())
}

fn read_zip64_eocd(data: &[u8], eocd: usize) -> Result<(u64, u64), String> {
    let locator = eocd
        .checked_sub(20)
        .ok_or_else(|| "zip64 locator missing".to_string())?;
    let mut c = Cursor::at(data, locator as u64)?;
    if c.u32()? != ZIP64_LOCATOR_SIG {
        return Err("zip64 locator missing".into());
    }
    let _disk = c.u32()?;
    let record = c.u64()?;
    let mut c = Cursor::at(data, record)?;
    if c.u32()? != ZIP64_EOCD_SIG {
        return Err("zip64 end-of-directory record is corrupt".into());
    }
    let _size = c.u64()?;
    let _versions = c.u32()?;
    let _disk = c.u32()?;
    let _cd_disk = c.u32()?;
    let _entries_here = c.u64()?;
    let count = c.u64()?;
    let _cd_size = c.u64()?;
    let offset = c.u64()?;
    Ok((count, offset))
}

/// The zip64 extra field (id 1) holds the 64-bit values of fields set to 0xFFFFFFFF.
fn apply_zip64_extra(
    extra: &[u8],
    size: &mut u64,
    compressed: &mut u64,
    offset: &mut u64,
) -> Result<(), String> {
    let mut c = Cursor {
        data: extra,
        pos: 0,
    };
    while c.pos + 4 <= extra.len() {
        let id = c.u16()?;
        let len = c.u16()? as usize;
        let body = c.bytes(len)?;
        if id == 1 {
            let mut b = Cursor { data: body, pos: 0 };
            for field in [size, compressed, offset] {
                if *field == 0xFFFF_FFFF {
                    *field = b.u64()?;
                }
            }
            return Ok(());
        }
    }
    Ok(())
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), as zip uses.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_known_string() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Archive::parse(b"PK\x05\x06").is_err());
        let mut eocd = vec![0u8; 22];
        eocd[..4].copy_from_slice(&EOCD_SIG.to_le_bytes());
        eocd[10..12].copy_from_slice(&5u16.to_le_bytes());
        eocd[16..20].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Archive::parse(&eocd).is_err());
    }
}
