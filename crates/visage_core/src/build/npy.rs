//! A small reader for NumPy `.npz` archives (zip files of `.npy` arrays).
//!
//! Only what the model sources use is supported: little-endian `f4`, `f8`, `i4` and `i8`
//! arrays in C order. Anything else is reported as an error naming the array.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::BuildError;

/// An array read from an `.npy` entry, converted to `f64` or `i64`.
#[derive(Debug, Clone)]
pub struct NpyArray<T> {
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Values in C (row-major) order.
    pub data: Vec<T>,
}

/// An opened `.npz` archive.
pub struct Npz {
    path: PathBuf,
    archive: zip::ZipArchive<std::fs::File>,
}

enum Dtype {
    F4,
    F8,
    I4,
    I8,
}

impl Npz {
    /// Opens the archive at `path`.
    pub fn open(path: &Path) -> Result<Self, BuildError> {
        let file = std::fs::File::open(path).map_err(|e| BuildError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let archive = zip::ZipArchive::new(file).map_err(|e| BuildError::BadInput {
            path: path.display().to_string(),
            detail: format!("not a readable .npz (zip) archive: {e}"),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            archive,
        })
    }

    fn bad(&self, detail: String) -> BuildError {
        BuildError::BadInput {
            path: self.path.display().to_string(),
            detail,
        }
    }

    fn raw(&mut self, name: &str) -> Result<(Dtype, Vec<usize>, Vec<u8>), BuildError> {
        let entry = format!("{name}.npy");
        let mut bytes = Vec::new();
        {
            let mut f = self
                .archive
                .by_name(&entry)
                .map_err(|_| BuildError::BadInput {
                    path: self.path.display().to_string(),
                    detail: format!("the archive has no array `{name}`"),
                })?;
            f.read_to_end(&mut bytes).map_err(|e| BuildError::Io {
                path: format!("{}:{entry}", self.path.display()),
                source: e,
            })?;
        }
        let (dtype, shape, fortran, offset) =
            parse_header(&bytes).map_err(|d| self.bad(format!("array `{name}`: {d}")))?;
        let count: usize = shape.iter().product();
        let size = match dtype {
            Dtype::F4 | Dtype::I4 => 4,
            Dtype::F8 | Dtype::I8 => 8,
        };
        let payload = bytes.get(offset..).unwrap_or(&[]);
        if payload.len() < count * size {
            return Err(self.bad(format!(
                "array `{name}` is truncated: {} bytes for {count} values",
                payload.len()
            )));
        }
        let raw = &payload[..count * size];
        let data = if fortran && shape.len() > 1 {
            fortran_to_c(raw, &shape, size)
        } else {
            raw.to_vec()
        };
        Ok((dtype, shape, data))
    }

    /// Reads a floating-point (or integer) array as `f64`.
    pub fn f64(&mut self, name: &str) -> Result<NpyArray<f64>, BuildError> {
        let (dtype, shape, b) = self.raw(name)?;
        let data = match dtype {
            Dtype::F4 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::F8 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            Dtype::I4 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::I8 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64)
                .collect(),
        };
        Ok(NpyArray { shape, data })
    }

    /// Reads an integer array as `i64`.
    pub fn i64(&mut self, name: &str) -> Result<NpyArray<i64>, BuildError> {
        let (dtype, shape, b) = self.raw(name)?;
        let data = match dtype {
            Dtype::I4 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Dtype::I8 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            Dtype::F4 | Dtype::F8 => {
                return Err(self.bad(format!(
                    "array `{name}` holds floating-point values where integers were expected"
                )));
            }
        };
        Ok(NpyArray { shape, data })
    }
}

/// Parses an `.npy` header; returns dtype, shape and the offset of the data.
fn parse_header(bytes: &[u8]) -> Result<(Dtype, Vec<usize>, bool, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (bad magic)".into());
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + len)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let descr = dict_value(header, "descr").ok_or("the .npy header has no `descr`")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = match descr {
        "<f4" => Dtype::F4,
        "<f8" => Dtype::F8,
        "<i4" => Dtype::I4,
        "<i8" => Dtype::I8,
        other => return Err(format!("unsupported dtype `{other}`")),
    };
    let fortran = dict_value(header, "fortran_order").ok_or("no `fortran_order`")?;
    let fortran = match fortran.trim() {
        "False" => false,
        "True" => true,
        other => return Err(format!("bad `fortran_order` value `{other}`")),
    };
    let shape_s = dict_value(header, "shape").ok_or("the .npy header has no `shape`")?;
    let shape = shape_s
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape `{shape_s}`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, shape, fortran, start + len))
}

/// Reorders the elements of a column-major array (element size `size` bytes) into row-major.
fn fortran_to_c(raw: &[u8], shape: &[usize], size: usize) -> Vec<u8> {
    let count: usize = shape.iter().product();
    let mut out = vec![0u8; raw.len()];
    let mut idx = vec![0usize; shape.len()];
    for c_pos in 0..count {
        // Column-major offset of the multi-index `idx`.
        let mut f_pos = 0;
        let mut stride = 1;
        for (d, &i) in idx.iter().enumerate() {
            f_pos += i * stride;
            stride *= shape[d];
        }
        out[c_pos * size..(c_pos + 1) * size]
            .copy_from_slice(&raw[f_pos * size..(f_pos + 1) * size]);
        // Advance the row-major multi-index.
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// The textual value of `key` in a Python dict literal such as the `.npy` header.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[k + key.len() + 2..];
    let colon = rest.find(':')?;
    let rest = rest[colon + 1..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_v1_header() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (5023, 3), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        let (d, s, f, off) = parse_header(&b).unwrap();
        assert!(matches!(d, Dtype::F4) && !f);
        assert_eq!(s, vec![5023, 3]);
        assert_eq!(off, 10 + header.len());
        let scalar = "{'descr': '<i8', 'fortran_order': False, 'shape': (), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(scalar.len() as u16).to_le_bytes());
        b.extend_from_slice(scalar.as_bytes());
        assert!(parse_header(&b).unwrap().1.is_empty());
        assert!(parse_header(b"not numpy at all").is_err());
    }

    #[test]
    fn fortran_order_is_transposed() {
        // 2×3 array [[1,2,3],[4,5,6]] stored column-major as 1,4,2,5,3,6 (one byte each).
        let raw = [1u8, 4, 2, 5, 3, 6];
        assert_eq!(fortran_to_c(&raw, &[2, 3], 1), vec![1, 2, 3, 4, 5, 6]);
    }
}
