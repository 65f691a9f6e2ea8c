//! Reading one input within limits. Sizes are counted while reading, never
//! taken from the file's metadata (`/proc` files report 0), and a file is
//! opened without following a final symlink and without blocking, then
//! checked to be a regular file before a byte is read.

use std::{fs::OpenOptions, io::Read, os::unix::fs::OpenOptionsExt, path::Path};

use super::errors::{LoadError, Skipped};

/// How much `check` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One YAML document or one JSON object (a `List`'s items one by one).
    pub document: usize,
    /// One file, or standard input.
    pub file: usize,
}

/// A little above the API server's 3 MiB request limit: no object it would
/// accept is refused.
pub const DEFAULT_DOCUMENT_LIMIT: usize = 4 << 20;
/// A repository's rendered manifests can be tens of MiB in one file.
pub const DEFAULT_FILE_LIMIT: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            document: DEFAULT_DOCUMENT_LIMIT,
            file: DEFAULT_FILE_LIMIT,
        }
    }
}

/// Reads a file the walk resolved, as text.
pub(crate) fn file(name: &str, path: &Path, limits: Limits) -> Result<String, LoadError> {
    let read_err = |error| LoadError::Read {
        source_name: name.to_owned(),
        error,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // The path was swapped for a symlink after the walk resolved it.
            Some(libc::ELOOP) => LoadError::Skipped {
                source_name: name.to_owned(),
                reason: Skipped::SymlinkOutside,
            },
            _ => read_err(e),
        })?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(LoadError::Skipped {
            source_name: name.to_owned(),
            reason: Skipped::NotRegular(super::inputs::special(meta.file_type())),
        });
    }
    text(name, bounded(name, file, limits.file)?)
}

/// Reads standard input, within the same limit as a file.
pub(crate) fn stdin(limits: Limits) -> Result<String, LoadError> {
    let name = "<stdin>";
    text(name, bounded(name, std::io::stdin().lock(), limits.file)?)
}

fn bounded(name: &str, reader: impl Read, limit: usize) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::new();
    reader
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| LoadError::Read {
            source_name: name.to_owned(),
            error,
        })?;
    if bytes.len() > limit {
        return Err(LoadError::TooLarge {
            source_name: name.to_owned(),
            what: "one file (--max-file-size raises it)".to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// The bytes as text, or a description of why they are not: a file that
/// is not text (an environment block, a key, a binary) is never quoted.
fn text(name: &str, bytes: Vec<u8>) -> Result<String, LoadError> {
    let binary = |detail: String| LoadError::NotText {
        source_name: name.to_owned(),
        detail,
    };
    if let Some(at) = bytes
        .iter()
        .position(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f)
    {
        return Err(binary(format!(
            "control byte 0x{:02x} at offset {at}",
            bytes[at]
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        binary(format!(
            "invalid UTF-8 at offset {}",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Opens nothing: for tests that need a reader.
#[cfg(test)]
fn from_reader(name: &str, reader: impl Read, limits: Limits) -> Result<String, LoadError> {
    text(name, bounded(name, reader, limits.file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        document: 8,
        file: 16,
    };

    #[test]
    fn over_the_file_limit_is_refused_while_reading() {
        let e = from_reader("zero", std::io::repeat(0).take(1 << 30), SMALL).unwrap_err();
        assert_eq!(
            e.to_string(),
            "zero: over the 16-byte limit for one file (--max-file-size raises it)"
        );
        assert_eq!(
            from_reader("ok", &b"kind: Pod\n"[..], SMALL).unwrap(),
            "kind: Pod\n"
        );
    }

    #[test]
    fn binary_content_is_described_never_quoted() {
        let e = from_reader("env", &b"TOKEN=s3cr3t\0HOME=/root\0"[..], Limits::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "env: not text (control byte 0x00 at offset 12): not read, not quoted"
        );
        let e = from_reader("bin", &[b'a', 0xff, 0xfe][..], Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid UTF-8 at offset 1"), "{e}");
    }

    #[test]
    fn a_fifo_is_opened_without_blocking_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = file("p.yaml", &fifo, Limits::default()).unwrap_err();
        assert_eq!(e.to_string(), "p.yaml: skipped: a FIFO, not a regular file");
        let link = dir.path().join("l.yaml");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        let e = file("l.yaml", &link, Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "l.yaml: skipped: symlink outside the scanned tree"
        );
    }
}
