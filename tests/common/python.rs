//! Virtual environments for the official Python SDK tests: one per pinned package under the
//! target dir, created and installed from PyPI on first use, reused while the pin holds.

use std::path::PathBuf;
use std::process::Command;

/// The venv's python with `package==version` installed (its module `module` importable).
pub fn pinned_venv(package: &str, module: &str, version: &str) -> PathBuf {
    // The tests of a binary run at once; one of them sets the environment up.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("python-{package}"));
    let python = dir.join("bin").join("python");
    let check = format!("import {module}, sys; sys.exit({module}.__version__ != sys.argv[1])");
    let pinned = Command::new(&python)
        .args(["-c", &check, version])
        .status()
        .is_ok_and(|s| s.success());
    if !pinned {
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            &format!("{package}=={version}"),
        ]));
    }
    python
}

/// Run a command that must succeed.
pub fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A venv named `name` under the target dir with every `package==version` of `pins` installed
/// (checked by the installed distributions' versions, for packages without `__version__`).
pub fn venv_with(name: &str, pins: &[&str]) -> PathBuf {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("python-{name}"));
    let python = dir.join("bin").join("python");
    let check = "import importlib.metadata as m, sys\n\
                 sys.exit(any(m.version(p.split('==')[0]) != p.split('==')[1] for p in sys.argv[1:]))";
    let pinned = Command::new(&python)
        .arg("-c")
        .arg(check)
        .args(pins)
        .status()
        .is_ok_and(|s| s.success());
    if !pinned {
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(pins));
    }
    python
}

/// Run a Python check script (`command`, already given its arguments): it must exit 0 and
/// print `passed`, else the test fails with everything it printed.
pub fn run_check(command: &mut Command, passed: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(passed),
        "no {passed:?} in:\n{stdout}\n{stderr}"
    );
}
