//! What `check` reports about input it could not use: why, and whether the
//! user named it. Shared by the walk, the reader and the parser.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: cannot read: {error}")]
    Read {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}: document {document}: {message}")]
    Parse {
        source_name: String,
        document: usize,
        message: String,
    },
    #[error("{source_name}: skipped: {reason}")]
    Skipped {
        source_name: String,
        reason: Skipped,
    },
    #[error("{source_name}: over the {} limit for {what}", size(*.limit))]
    TooLarge {
        source_name: String,
        what: String,
        limit: usize,
    },
    #[error("{source_name}: not text ({detail}): not read, not quoted")]
    NotText { source_name: String, detail: String },
}

/// Why an input was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// It leads out of the tree named on the command line.
    SymlinkOutside,
    /// It leads nowhere.
    Dangling,
    /// A FIFO, socket or device: opening or reading it could block forever.
    NotRegular(&'static str),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::SymlinkOutside => f.write_str("symlink outside the scanned tree"),
            Skipped::Dangling => f.write_str("dangling symlink"),
            Skipped::NotRegular(what) => write!(f, "{what}, not a regular file"),
        }
    }
}

/// A limit as people read it: bytes below a KiB, else KiB or MiB.
fn size(bytes: usize) -> String {
    match bytes {
        b if b < 1 << 10 => format!("{b}-byte"),
        b if b < 1 << 20 || b % (1 << 20) != 0 => format!("{} KiB", b >> 10),
        b => format!("{} MiB", b >> 20),
    }
}

impl LoadError {
    /// The document of the file the error is about, when it is one.
    pub fn document(&self) -> Option<usize> {
        match self {
            LoadError::Parse { document, .. } => Some(*document),
            _ => None,
        }
    }

    /// The file (or `<stdin>`) the error is about.
    pub fn source_name(&self) -> &str {
        match self {
            LoadError::Read { source_name, .. }
            | LoadError::Parse { source_name, .. }
            | LoadError::Skipped { source_name, .. }
            | LoadError::TooLarge { source_name, .. }
            | LoadError::NotText { source_name, .. } => source_name,
        }
    }
}

/// Input that could not be used. A scan of a repository meets values
/// files, config files and broken YAML; each is reported and the rest is
/// still judged.
#[derive(Debug)]
pub struct Unusable {
    pub error: LoadError,
    /// Named on the command line (or stdin): the user asked for exactly
    /// this input, so its loss is an error, not a note.
    pub explicit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_people_write_them() {
        assert_eq!(size(16), "16-byte");
        assert_eq!(size(4 << 20), "4 MiB");
        assert_eq!(size(1536), "1 KiB");
    }
}
