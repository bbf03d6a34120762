//! The strict tar subset of bundles: POSIX ustar headers, regular files only, flat names in
//! the name field, no PAX/GNU extensions, links, devices, sparse entries or setuid bits.
//! Written and read here rather than with the `tar` crate, whose job is to accept the many
//! tar dialects this format refuses.

use std::io::{self, Read, Write};

use crate::Error;
use crate::name::{EntryName, escape};

pub const BLOCK: usize = 512;
/// Largest entry size the 12-digit octal size field holds.
pub const MAX_ENTRY: u64 = (1 << 36) - 1;

/// One header, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: EntryName,
    pub size: u64,
}

fn octal(field: &[u8]) -> Option<u64> {
    let s: &[u8] = {
        let start = field.iter().position(|&b| b != b' ')?;
        let end = field.iter().rposition(|&b| b != b' ' && b != 0)? + 1;
        if start >= end {
            return None;
        }
        &field[start..end]
    };
    if s.len() > 12 || !s.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| acc.checked_mul(8)?.checked_add(u64::from(b - b'0')))
}

fn checksum(block: &[u8; BLOCK]) -> u64 {
    block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum()
}

/// Reads exactly `buf.len()` bytes; a short read is a truncation at `offset`.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8], offset: u64, what: &str) -> Result<(), Error> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(Error::Truncated { offset: offset + got as u64, what: what.to_string() }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e.to_string())),
        }
    }
    Ok(())
}

/// Reads one header at `offset`; `None` at the end-of-archive marker (two zero blocks).
pub fn read_header(r: &mut impl Read, offset: u64) -> Result<Option<Header>, Error> {
    let mut block = [0u8; BLOCK];
    read_full(r, &mut block, offset, "tar header")?;
    if block.iter().all(|&b| b == 0) {
        read_full(r, &mut block, offset + BLOCK as u64, "end-of-archive marker")?;
        if !block.iter().all(|&b| b == 0) {
            return Err(Error::Tar { offset, why: "a zero block followed by data".into() });
        }
        return Ok(None);
    }
    let err = |why: String| Error::Tar { offset, why };
    let stored = octal(&block[148..156]).ok_or_else(|| err("checksum field is not octal".into()))?;
    if stored != checksum(&block) {
        return Err(err(format!("header checksum {stored} does not match {}", checksum(&block))));
    }
    if &block[257..263] != b"ustar\0" || &block[263..265] != b"00" {
        return Err(err("not a POSIX ustar header (GNU and old tar headers are refused)".into()));
    }
    let name_end = block[..100].iter().position(|&b| b == 0).unwrap_or(100);
    let raw_name = String::from_utf8_lossy(&block[..name_end]).into_owned();
    match block[156] {
        b'0' => {}
        b'x' | b'g' => return Err(err(format!("`{}`: PAX extended header refused", escape(&raw_name)))),
        b'L' | b'K' => return Err(err(format!("`{}`: GNU long-name header refused", escape(&raw_name)))),
        b'S' => return Err(err(format!("`{}`: sparse entry refused", escape(&raw_name)))),
        b'1' | b'2' => return Err(err(format!("`{}`: link entry refused (regular files only)", escape(&raw_name)))),
        b'3' | b'4' => return Err(err(format!("`{}`: device node refused", escape(&raw_name)))),
        b'5' => return Err(err(format!("`{}`: directory entry refused (bundles are flat)", escape(&raw_name)))),
        b'6' => return Err(err(format!("`{}`: FIFO refused", escape(&raw_name)))),
        t => {
            return Err(err(format!(
                "`{}`: entry type {:?} refused (regular files only)",
                escape(&raw_name),
                t as char
            )));
        }
    }
    if block[name_end..100].iter().any(|&b| b != 0) || block[345..500].iter().any(|&b| b != 0) {
        return Err(err(format!("`{}`: bytes after the name, or a prefix field (names are flat)", escape(&raw_name))));
    }
    if block[157..257].iter().any(|&b| b != 0) {
        return Err(err(format!("`{}`: a regular file with a link name", escape(&raw_name))));
    }
    let mode = octal(&block[100..108]).ok_or_else(|| err("mode field is not octal".into()))?;
    if mode & 0o7000 != 0 {
        return Err(err(format!("`{}`: setuid, setgid or sticky bit (mode {mode:o})", escape(&raw_name))));
    }
    let size = octal(&block[124..136]).ok_or_else(|| err("size field is not octal".into()))?;
    let name = EntryName::new(&raw_name).map_err(|e| match e {
        Error::BadEntry { name, why } => Error::Tar { offset, why: format!("entry `{name}`: {why}") },
        other => other,
    })?;
    Ok(Some(Header { name, size }))
}

/// Bytes of padding after an entry of `size` bytes.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Writes a ustar header for a regular file.
pub fn write_header(w: &mut impl Write, name: &EntryName, size: u64) -> io::Result<()> {
    if size > MAX_ENTRY {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "entry larger than 64 GiB"));
    }
    let mut b = [0u8; BLOCK];
    b[..name.as_str().len()].copy_from_slice(name.as_str().as_bytes());
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:012o}").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = b'0';
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    let sum = checksum(&b);
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    w.write_all(&b)
}

pub fn write_padding(w: &mut impl Write, size: u64) -> io::Result<()> {
    w.write_all(&[0u8; BLOCK][..padding(size) as usize])
}

pub fn write_end(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}
