//! Minimal `.npy` (NumPy format 1.0/2.0) reading and writing for float32
//! arrays: how latents, noise and float images travel between Kiln and Python
//! tools such as the diffusers reference.
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Reads a little-endian float32 (or float64, converted) C-order `.npy` file.
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {}: {e}", path.display())))?;
    parse_f32(&bytes).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

/// Parses the bytes of a `.npy` file as [`read_f32`] reads them (for arrays
/// that come from elsewhere, such as the members of an `.npz` archive).
pub fn parse_f32(bytes: &[u8]) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated header")?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = &header[i + key.len() + 2..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or("no descr")?;
    let elem = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(format!("only little-endian float32/float64 arrays are supported (descr {descr})"));
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_text = field("shape").ok_or("no shape")?;
    let inner = shape_text.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("bad shape")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad dimension {s:?}")))
        .collect::<std::result::Result<_, _>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let data = &bytes[start + header_len..];
    if data.len() != count * elem {
        return Err(format!("expected {} data bytes, found {}", count * elem, data.len()));
    }
    let values = if elem == 4 {
        data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Ok((shape, values))
}

/// Writes a float32 C-order `.npy` file.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    if shape.iter().product::<usize>() != data.len() {
        return Err(Error::invalid("npy: shape does not match the data length"));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so the data starts on a 64-byte boundary, newline-terminated.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).map_err(|e| Error::new(ErrorKind::Io, format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        super::write_f32(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        let (shape, data) = super::read_f32(&p).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        assert!(super::parse_f32(b"garbage").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
