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
    common::python::pinned_venv(
        "anthropic",
        "anthropic",
        ANTHROPIC_SDK.trim_start_matches("anthropic=="),
    )
}

#[test]
fn the_official_anthropic_sdk_round_trips_plain_streamed_and_tools() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/anthropic_sdk.py");
    common::python::run_check(
        Command::new(venv()).arg(script).arg(common::base_url()),
        "anthropic checks passed",
    );
}
