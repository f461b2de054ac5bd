//! Files that must not be left half-written: a download goes to a partial file with a name
//! of its own (so two fetches of the same model never write the same file) and is renamed
//! over the final name only once it is complete and verified. Scratch folders go the same
//! way: they are removed when dropped, whatever happened.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// A name no other fetch, in this process or another, is using right now.
pub(super) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:08x}", std::process::id())
}

/// A file being written next to its final path; deleted on drop unless `commit`ted.
/// Everything written goes through a sha256 so that no second read is needed.
pub(super) struct PartialFile {
    path: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    written: u64,
}

impl PartialFile {
    pub(super) fn create(final_path: &Path) -> io::Result<Self> {
        let mut name = final_path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.partial", unique_suffix()));
        let path = final_path.with_file_name(name);
        let file = File::create(&path)?;
        Ok(Self {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// Flushes to disk and returns the sha256 (lowercase hex) of everything written.
    pub(super) fn finish(&mut self) -> io::Result<String> {
        if let Some(file) = &self.file {
            file.sync_all()?;
        }
        Ok(hex(&self.hasher.clone().finalize()))
    }

    /// Moves the finished file to `final_path`; rename is atomic on one file system, so a
    /// reader sees either the old file or the whole new one.
    pub(super) fn commit(mut self, final_path: &Path) -> io::Result<()> {
        self.file.take();
        std::fs::rename(&self.path, final_path)?;
        // Nothing left to clean up: forget the path so Drop does not delete the result.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Write for PartialFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("partial file already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A scratch folder, removed with everything in it when dropped.
pub(super) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new empty folder inside `parent` (created if needed).
    pub(super) fn new_in(parent: &Path) -> io::Result<Self> {
        let path = parent.join(unique_suffix());
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A folder for a test, removed at the end of it.
#[cfg(test)]
pub(super) fn test_dir(what: &str) -> ScratchDir {
    let path = std::env::temp_dir().join(format!("wick-test-{what}-{}", unique_suffix()));
    std::fs::create_dir_all(&path).unwrap();
    ScratchDir { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_hashes_and_commits() {
        let dir = test_dir("partial");
        let final_path = dir.path().join("x.bin");
        let mut partial = PartialFile::create(&final_path).unwrap();
        partial.write_all(b"abc").unwrap();
        assert_eq!(partial.written(), 3);
        assert_eq!(
            partial.finish().unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        partial.commit(&final_path).unwrap();
        assert_eq!(std::fs::read(&final_path).unwrap(), b"abc");
        // Only the final file is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_partial_file_is_removed() {
        let dir = test_dir("partial-drop");
        let final_path = dir.path().join("x.bin");
        let mut partial = PartialFile::create(&final_path).unwrap();
        partial.write_all(b"abc").unwrap();
        drop(partial);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
