//! The official Python `anthropic` SDK against the real server's /v1/messages:
//! tests/python/anthropic_sdk.py runs in a virtual environment under the target dir
//! (created, with the pinned SDK installed from PyPI, on first run, as tests/python_sdk.rs
//! does for the `openai` SDK) and must exit 0.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK version the script is checked against.
const ANTHROPIC_SDK: &str = "anthropic==2.17.0";

fn venv() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-anthropic");
    let python = dir.join("bin").join("python");
    let pinned = Command::new(&python)
        .args([
            "-c",
            "import anthropic, sys; sys.exit(anthropic.__version__ != sys.argv[1])",
        ])
        .arg(ANTHROPIC_SDK.trim_start_matches("anthropic=="))
        .status()
        .is_ok_and(|s| s.success());
    if !pinned {
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", ANTHROPIC_SDK]));
    }
    python
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

#[test]
fn the_official_anthropic_sdk_round_trips_plain_streamed_and_tools() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/anthropic_sdk.py");
    let output = Command::new(venv())
        .arg(script)
        .arg(common::base_url())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("anthropic checks passed"), "{stdout}");
}
