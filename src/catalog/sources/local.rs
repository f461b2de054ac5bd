//! A file already on disk: used where it is, never copied. Its sha256 is checked the first
//! time and remembered (see `verify`), so later starts only look at size and mtime.

use std::path::Path;

use crate::catalog::verify;

/// Whether `path` is the model file: exists, has the catalog's size, and (once) its sha256.
/// The error is the reason, worded for the list of failed sources.
pub(in crate::catalog) fn check(
    path: &Path,
    marker: &Path,
    size: Option<u64>,
    sha256: Option<&str>,
    tick: &dyn Fn(u64),
) -> Result<(), String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("not found".into()),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    if !meta.is_file() {
        return Err("not a file".into());
    }
    if let Some(size) = size {
        if meta.len() != size {
            return Err(format!("{} bytes, expected {size}", meta.len()));
        }
    }
    match sha256 {
        Some(sha) => verify::check_once(path, marker, sha, tick),
        None => Ok(()),
    }
}
