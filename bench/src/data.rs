//! Sizes on the command line and the incompressible files the benches move.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{GIB, MIB};

/// "64M", "4G", "4K": powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = s.trim().split_at(s.trim().len().saturating_sub(1));
    let mult = match unit {
        "K" | "k" => 1 << 10,
        "M" | "m" => MIB,
        "G" | "g" => GIB,
        _ => return Err(format!("{s:?}: want a number with K, M or G")),
    };
    n.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|e| format!("{s:?}: {e}"))
}

pub fn label(bytes: u64) -> String {
    match bytes {
        b if b % GIB == 0 => format!("{}G", b / GIB),
        b if b % MIB == 0 => format!("{}M", b / MIB),
        b => format!("{}K", b / 1024),
    }
}

pub fn data_file(dir: &Path, size: u64) -> PathBuf {
    dir.join(format!("data-{}.bin", label(size)))
}

/// Writes `size` pseudo-random bytes unless a file of that size is already there.
pub fn ensure_data(dir: &Path, size: u64) -> anyhow::Result<()> {
    let path = data_file(dir, size);
    if fs::metadata(&path).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    eprintln!("generating {} ({size} bytes)", path.display());
    let part = path.with_extension("part");
    let mut f = std::io::BufWriter::with_capacity(MIB as usize, File::create(&part)?);
    // xorshift64: a few GB/s, and incompressible enough for any transport or disk.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ size;
    let mut block = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.into_inner()?.sync_all()?;
    fs::rename(&part, &path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_labels() {
        assert_eq!(parse_size("64M"), Ok(64 * MIB));
        assert_eq!(parse_size("4G"), Ok(4 * GIB));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert!(parse_size("12").is_err());
        assert_eq!(label(4 * GIB), "4G");
        assert_eq!(label(64 * MIB), "64M");
        assert_eq!(label(4096), "4K");
    }
}
