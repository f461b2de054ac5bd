//! The official Python `openai` SDK against the real server: tests/python/openai_sdk.py runs
//! in a virtual environment under the target dir (created, with the pinned SDK installed
//! from PyPI, on first run) and must exit 0; so must tests/python/reasoning_sdk.py, against a
//! thinking model (tests/common/thinking.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK version the script is checked against.
const OPENAI_SDK: &str = "openai==3.51.0";

fn venv() -> PathBuf {
    common::python::pinned_venv(
        "openai",
        "openai",
        OPENAI_SDK.trim_start_matches("openai=="),
    )
}

/// Run a script of tests/python with the SDK's venv; it must succeed and print `passed`.
fn run_script(script: &str, args: &[String], passed: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    common::python::run_check(Command::new(venv()).arg(script).args(args), passed);
}

#[test]
fn the_official_python_sdk_uses_every_endpoint() {
    run_script("openai_sdk.py", &[common::base_url()], "checks passed");
}

#[test]
fn the_official_python_sdk_reads_a_thinking_models_reasoning_content() {
    let args = [
        format!("http://{}", common::thinking::server()),
        common::thinking::OPENS.to_string(),
    ];
    run_script("reasoning_sdk.py", &args, "reasoning checks passed");
}
