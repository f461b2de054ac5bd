//! Hash a file once, then trust it: a small marker file remembers the sha256 a file had
//! together with its size and modification time. While those two are unchanged the marker
//! answers for the file, so a 1 GB model is not read again on every start.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::files::{hex, unique_suffix};

/// What a marker knows about the file it was written for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Recorded {
    /// The file was hashed and its sha256 is the expected one.
    Matches,
    /// The file was hashed and its sha256 is this other one.
    Differs(String),
    /// No marker, or the file changed since.
    Unknown,
}

/// The size and modification time (ns since the epoch) that identify one version of a file.
fn stamp(file: &Path) -> io::Result<(u64, u128)> {
    let meta = fs::metadata(file)?;
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((meta.len(), mtime))
}

pub(super) fn recorded(marker: &Path, file: &Path, expected_sha: &str) -> Recorded {
    let (Ok(text), Ok((size, mtime))) = (fs::read_to_string(marker), stamp(file)) else {
        return Recorded::Unknown;
    };
    let mut fields = text.split_whitespace();
    let (Some(sha), Some(m_size), Some(m_mtime)) = (fields.next(), fields.next(), fields.next())
    else {
        return Recorded::Unknown;
    };
    if m_size != size.to_string() || m_mtime != mtime.to_string() {
        return Recorded::Unknown;
    }
    if sha.eq_ignore_ascii_case(expected_sha) {
        Recorded::Matches
    } else {
        Recorded::Differs(sha.to_string())
    }
}

/// Remembers that `file`, as it is now, has sha256 `sha`. Written under a temporary name and
/// renamed, so a concurrent reader never sees half a marker.
pub(super) fn record(marker: &Path, file: &Path, sha: &str) -> io::Result<()> {
    let (size, mtime) = stamp(file)?;
    if let Some(dir) = marker.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut tmp_name = marker.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", unique_suffix()));
    let tmp = marker.with_file_name(tmp_name);
    fs::write(&tmp, format!("{sha} {size} {mtime}\n"))?;
    fs::rename(&tmp, marker).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// sha256 (lowercase hex) of a file's content; `tick` hears the bytes as they are read.
pub(super) fn sha256_file(path: &Path, tick: &dyn Fn(u64)) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tick(n as u64);
    }
    Ok(hex(&hasher.finalize()))
}

/// Checks `file` against `expected_sha`, hashing it only when the marker cannot answer.
/// The outcome is recorded either way, so a wrong file is not hashed again either.
pub(super) fn check_once(
    file: &Path,
    marker: &Path,
    expected_sha: &str,
    tick: &dyn Fn(u64),
) -> Result<(), String> {
    let actual = match recorded(marker, file, expected_sha) {
        Recorded::Matches => return Ok(()),
        Recorded::Differs(actual) => actual,
        Recorded::Unknown => {
            let actual = sha256_file(file, tick).map_err(|e| format!("cannot read: {e}"))?;
            if let Err(e) = record(marker, file, &actual) {
                // Only costs a second hash next time; not worth failing for.
                tracing::warn!("cannot write {}: {e}", marker.display());
            }
            actual
        }
    };
    if actual.eq_ignore_ascii_case(expected_sha) {
        Ok(())
    } else {
        Err(mismatch(expected_sha, &actual))
    }
}

pub(super) fn mismatch(expected: &str, actual: &str) -> String {
    format!("sha256 mismatch: expected {expected}, got {actual}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::files::test_dir;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn hashes_once_then_trusts_the_marker() {
        let dir = test_dir("verify");
        let file = dir.path().join("f");
        let marker = dir.path().join("f.sha256-ok");
        fs::write(&file, b"abc").unwrap();
        assert_eq!(recorded(&marker, &file, ABC), Recorded::Unknown);

        let read = std::cell::Cell::new(0);
        check_once(&file, &marker, ABC, &|n| read.set(read.get() + n)).unwrap();
        assert_eq!(read.get(), 3);
        assert_eq!(recorded(&marker, &file, ABC), Recorded::Matches);
        check_once(&file, &marker, ABC, &|_| panic!("hashed twice")).unwrap();

        let other = "0".repeat(64);
        let err = check_once(&file, &marker, &other, &|_| panic!("hashed twice")).unwrap_err();
        assert!(err.contains("sha256 mismatch"), "{err}");
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = test_dir("verify-changed");
        let file = dir.path().join("f");
        let marker = dir.path().join("f.sha256-ok");
        fs::write(&file, b"abc").unwrap();
        record(&marker, &file, ABC).unwrap();
        fs::write(&file, b"abcd").unwrap();
        assert_eq!(recorded(&marker, &file, ABC), Recorded::Unknown);
    }
}
