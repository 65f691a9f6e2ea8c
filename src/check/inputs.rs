//! Which files `check` reads: the boundary between the tree it was asked to
//! scan and the rest of the machine. `check` runs in CI on files written by
//! whoever opened a pull request, so a committed symlink is untrusted: it is
//! followed only when it resolves inside the tree named on the command line,
//! and only regular files are ever opened. What is skipped is reported by the
//! name it has in the tree, never by its target.

use std::{
    collections::HashSet,
    fs::FileType,
    os::unix::fs::FileTypeExt,
    path::{Component, Path, PathBuf},
};

use super::errors::{LoadError, Skipped, Unusable};

const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// One file to read.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// The path as the user named it or as the walk reached it (the link's
    /// own name for a symlink): what reports print.
    pub name: String,
    /// What to open: the resolved path, free of symlinks, so that opening
    /// it with `O_NOFOLLOW` cannot be sent elsewhere.
    pub open: PathBuf,
    /// Named on the command line: its loss fails the run.
    pub explicit: bool,
}

/// One thing named or met, in the order reports list them.
#[derive(Debug)]
pub(crate) enum Entry {
    File(Input),
    Stdin,
    /// Refused before a byte of it was read.
    Skipped(Unusable),
}

/// What `check` will read, and what it refused to.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    pub entries: Vec<Entry>,
    /// Directories walked, as canonical paths: a symlink back up the tree
    /// would otherwise have every file under it judged again at each level.
    walked: HashSet<PathBuf>,
}

/// Whether symlinks may lead out of the scanned tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Symlinks {
    /// Followed only when they resolve inside the tree named on the command
    /// line (or, for a named path that is itself reached through a symlink,
    /// inside the working directory).
    #[default]
    WithinTree,
    /// Followed wherever they lead (`--follow-symlinks`): for trusted input.
    Anywhere,
}

pub(crate) fn is_manifest(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        MANIFEST_EXTENSIONS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(e))
    })
}

/// Resolves the paths named on the command line (`-` is stdin) into the
/// files to read, walking directories in name order.
pub(crate) fn collect(paths: &[PathBuf], symlinks: Symlinks) -> Inputs {
    let mut inputs = Inputs::default();
    let cwd = std::env::current_dir().and_then(|d| d.canonicalize()).ok();
    for path in paths {
        if path.as_os_str() == "-" {
            inputs.entries.push(Entry::Stdin);
            continue;
        }
        let name = path.display().to_string();
        let canonical = match path.canonicalize() {
            Ok(c) => c,
            Err(error) => {
                inputs.refuse(
                    LoadError::Read {
                        source_name: name,
                        error,
                    },
                    true,
                );
                continue;
            }
        };
        // A named path reached through a symlink (the path itself, or a
        // folder on the way) is the pull request's choice, not the
        // operator's: it must stay inside the working directory.
        let through_link = lexical_absolute(path, cwd.as_deref()) != canonical;
        let inside_cwd = cwd.as_ref().is_some_and(|cwd| canonical.starts_with(cwd));
        if through_link && !inside_cwd && symlinks == Symlinks::WithinTree {
            inputs.skip(name, Skipped::SymlinkOutside, true);
            continue;
        }
        inputs.entry(&canonical, name, canonical.clone(), true, symlinks);
    }
    inputs
}

impl Inputs {
    fn refuse(&mut self, error: LoadError, explicit: bool) {
        self.entries
            .push(Entry::Skipped(Unusable { error, explicit }));
    }

    fn skip(&mut self, source_name: String, reason: Skipped, explicit: bool) {
        self.refuse(
            LoadError::Skipped {
                source_name,
                reason,
            },
            explicit,
        );
    }

    /// One path whose real location (`real`, symlink-free) is known.
    fn entry(&mut self, root: &Path, name: String, real: PathBuf, explicit: bool, s: Symlinks) {
        let file_type = match std::fs::symlink_metadata(&real) {
            Ok(m) => m.file_type(),
            Err(error) => {
                return self.refuse(
                    LoadError::Read {
                        source_name: name,
                        error,
                    },
                    explicit,
                );
            }
        };
        if file_type.is_dir() {
            self.walk(root, &name, real, s);
        } else if file_type.is_file() {
            self.entries.push(Entry::File(Input {
                name,
                open: real,
                explicit,
            }));
        } else {
            self.skip(name, Skipped::NotRegular(special(file_type)), explicit);
        }
    }

    fn walk(&mut self, root: &Path, name: &str, dir: PathBuf, s: Symlinks) {
        if !self.walked.insert(dir.clone()) {
            return;
        }
        let entries: Result<Vec<_>, _> = std::fs::read_dir(&dir).and_then(|d| {
            d.map(|e| e.and_then(|e| Ok((e.file_name(), e.file_type()?))))
                .collect()
        });
        let mut entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                let source_name = name.to_owned();
                return self.refuse(LoadError::Read { source_name, error }, false);
            }
        };
        // Sorted, so output and exit codes do not depend on directory order.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (file_name, file_type) in entries {
            let child_name = Path::new(name).join(&file_name).display().to_string();
            let real = dir.join(&file_name);
            if file_type.is_symlink() {
                self.symlink(root, child_name, &real, s);
            } else if file_type.is_dir() {
                self.walk(root, &child_name, real, s);
            } else if is_manifest(&real) {
                self.entry(root, child_name, real, false, s);
            }
        }
    }

    /// A symlink met in a walk. Resolving it reads link targets and
    /// directory entries only; its target is opened (as a regular file)
    /// only when it lies inside the tree.
    fn symlink(&mut self, root: &Path, name: String, link: &Path, s: Symlinks) {
        let Ok(target) = link.canonicalize() else {
            // Dangling or a loop the kernel refused: nothing to read.
            if is_manifest(link) {
                self.skip(name, Skipped::Dangling, false);
            }
            return;
        };
        let is_dir = target.is_dir();
        if !is_dir && !is_manifest(link) {
            return;
        }
        if s == Symlinks::WithinTree && !target.starts_with(root) {
            return self.skip(name, Skipped::SymlinkOutside, false);
        }
        self.entry(root, name, target, false, s);
    }
}

pub(crate) fn special(file_type: FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// The absolute path as written, `.` and `..` folded without asking the
/// file system: compared with the canonical path it tells whether a symlink
/// was on the way.
fn lexical_absolute(path: &Path, cwd: Option<&Path>) -> PathBuf {
    let mut out = match (path.is_absolute(), cwd) {
        (false, Some(cwd)) => cwd.to_path_buf(),
        _ => PathBuf::new(),
    };
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(inputs: &Inputs) -> Vec<&str> {
        inputs
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::File(f) => Some(f.name.as_str()),
                _ => None,
            })
            .collect()
    }

    fn skipped(inputs: &Inputs) -> Vec<&Unusable> {
        inputs
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Skipped(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    fn notes(inputs: &Inputs) -> Vec<String> {
        skipped(inputs)
            .iter()
            .map(|u| u.error.to_string())
            .collect()
    }

    #[test]
    fn manifest_extensions_ignore_case() {
        assert!(is_manifest(Path::new("a/B.YAML")) && is_manifest(Path::new("c.Json")));
        assert!(!is_manifest(Path::new("README.md")) && !is_manifest(Path::new("yaml")));
    }

    #[test]
    fn symlinks_inside_are_followed_outside_are_skipped_unnamed() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.yaml");
        std::fs::write(&secret, "kind: Pod\n").unwrap();
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::write(t.join("a.yaml"), "kind: Pod\n").unwrap();
        std::os::unix::fs::symlink(t.join("a.yaml"), t.join("b.yaml")).unwrap();
        std::os::unix::fs::symlink(&secret, t.join("c.yaml")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.join("d")).unwrap();
        std::os::unix::fs::symlink("/nowhere", t.join("e.yaml")).unwrap();
        let inputs = collect(&[t.to_path_buf()], Symlinks::WithinTree);
        let shown = t.display().to_string();
        assert_eq!(
            names(&inputs),
            [format!("{shown}/a.yaml"), format!("{shown}/b.yaml")]
        );
        let notes = notes(&inputs);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].ends_with("c.yaml: skipped: symlink outside the scanned tree"));
        assert!(notes[1].ends_with("/d: skipped: symlink outside the scanned tree"));
        assert!(notes[2].contains("e.yaml: skipped: dangling symlink"));
        let outside_name = outside.path().display().to_string();
        assert!(
            notes.iter().all(|n| !n.contains(&outside_name)),
            "{notes:?}"
        );

        let anywhere = collect(&[t.to_path_buf()], Symlinks::Anywhere);
        assert_eq!(names(&anywhere).len(), 4, "{:?}", names(&anywhere));
    }

    #[test]
    fn special_files_are_skipped_named_or_walked() {
        let tree = tempfile::tempdir().unwrap();
        let fifo = tree.path().join("pipe.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let walked = collect(&[tree.path().to_path_buf()], Symlinks::WithinTree);
        assert!(names(&walked).is_empty());
        assert!(notes(&walked)[0].ends_with("pipe.yaml: skipped: a FIFO, not a regular file"));
        assert!(!skipped(&walked)[0].explicit);
        let named = collect(&[PathBuf::from("/dev/zero"), fifo], Symlinks::WithinTree);
        assert!(names(&named).is_empty());
        assert_eq!(
            notes(&named)[0],
            "/dev/zero: skipped: a character device, not a regular file"
        );
        assert!(skipped(&named).iter().all(|u| u.explicit));
    }

    #[test]
    fn a_symlink_loop_is_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("pod.yaml"), "kind: Pod\n").unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("loop")).unwrap();
        let inputs = collect(&[dir.path().to_path_buf()], Symlinks::WithinTree);
        assert_eq!(names(&inputs).len(), 1, "{:?}", names(&inputs));
        assert!(skipped(&inputs).is_empty(), "{:?}", notes(&inputs));
    }

    #[test]
    fn lexical_paths_fold_dots() {
        let cwd = Path::new("/w/repo");
        assert_eq!(
            lexical_absolute(Path::new("./a/../b"), Some(cwd)),
            Path::new("/w/repo/b")
        );
        assert_eq!(
            lexical_absolute(Path::new("/x/./y"), Some(cwd)),
            Path::new("/x/y")
        );
    }
}
