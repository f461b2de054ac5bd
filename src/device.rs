//! Where the models run: `--device cpu|cuda[:N]|metal[:N]`, parsed into a [`DeviceChoice`]
//! and opened as a candle [`Device`].
//!
//! GPU backends exist only in binaries built with the `cuda` or `metal` cargo feature, so
//! asking for one that was left out is an error that names the feature to build with; a
//! binary built with one uses its first GPU by default, and the CPU when none is usable.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    /// A CUDA GPU, by ordinal.
    Cuda(usize),
    /// A Metal GPU, by ordinal.
    Metal(usize),
}

/// The forms `--device` accepts, for error messages.
pub const ACCEPTED_FORMS: &str = "cpu, cuda, cuda:N, metal or metal:N";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a device: expected {ACCEPTED_FORMS}")]
pub struct ParseDeviceError(String);

impl FromStr for DeviceChoice {
    type Err = ParseDeviceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseDeviceError(text.to_string());
        let lower = text.trim().to_ascii_lowercase();
        let (kind, ordinal) = match lower.split_once(':') {
            Some((kind, n)) => (kind, Some(n.parse::<usize>().map_err(|_| invalid())?)),
            None => (lower.as_str(), None),
        };
        match (kind, ordinal) {
            ("cpu", None) => Ok(Self::Cpu),
            ("cuda", n) => Ok(Self::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(Self::Metal(n.unwrap_or(0))),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Open the device. A GPU kind this binary was built without is an error that says how
    /// to build one with it.
    pub fn open(self) -> anyhow::Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => open_cuda(ordinal),
            Self::Metal(ordinal) => open_metal(ordinal),
        }
    }
}

/// The device asked for, or by default the first GPU of a backend this binary was built
/// with (when one opens), else the CPU.
pub fn select(requested: Option<DeviceChoice>) -> anyhow::Result<(DeviceChoice, Device)> {
    if let Some(choice) = requested {
        return Ok((choice, choice.open()?));
    }
    let compiled_in = [
        (cfg!(feature = "cuda"), DeviceChoice::Cuda(0)),
        (cfg!(feature = "metal"), DeviceChoice::Metal(0)),
    ];
    for (built, choice) in compiled_in {
        if !built {
            continue;
        }
        match choice.open() {
            Ok(device) => return Ok((choice, device)),
            // A GPU build on a machine without a usable GPU still serves, slowly.
            Err(e) => tracing::warn!("{choice} is not usable ({e:#}); running on the CPU"),
        }
    }
    Ok((DeviceChoice::Cpu, Device::Cpu))
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> anyhow::Result<Device> {
    use anyhow::Context;
    Device::new_cuda(ordinal).with_context(|| format!("cannot open CUDA device {ordinal}"))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> anyhow::Result<Device> {
    anyhow::bail!(
        "this wick was built without CUDA support; build it with \
         `cargo build --release --features cuda` to run on a CUDA GPU"
    )
}

#[cfg(feature = "metal")]
fn open_metal(ordinal: usize) -> anyhow::Result<Device> {
    use anyhow::Context;
    Device::new_metal(ordinal).with_context(|| format!("cannot open Metal device {ordinal}"))
}

#[cfg(not(feature = "metal"))]
fn open_metal(_ordinal: usize) -> anyhow::Result<Device> {
    anyhow::bail!(
        "this wick was built without Metal support; build it with \
         `cargo build --release --features metal` to run on a Metal GPU"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        let parse = |s: &str| s.parse::<DeviceChoice>();
        assert_eq!(parse("cpu"), Ok(DeviceChoice::Cpu));
        assert_eq!(parse("cuda"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(parse("cuda:1"), Ok(DeviceChoice::Cuda(1)));
        assert_eq!(parse("metal"), Ok(DeviceChoice::Metal(0)));
        assert_eq!(parse("metal:2"), Ok(DeviceChoice::Metal(2)));
        // Environment variables are often written in capitals.
        assert_eq!(parse("CUDA:3"), Ok(DeviceChoice::Cuda(3)));
        assert_eq!(parse("Cpu"), Ok(DeviceChoice::Cpu));
    }

    #[test]
    fn other_text_is_refused_with_the_accepted_forms() {
        for bad in [
            "gpu", "", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "cuda:1:2", "tpu:0",
        ] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains(ACCEPTED_FORMS), "{bad:?}: {e}");
        }
    }

    #[test]
    fn devices_display_as_they_parse() {
        for choice in [
            DeviceChoice::Cpu,
            DeviceChoice::Cuda(0),
            DeviceChoice::Cuda(1),
            DeviceChoice::Metal(0),
        ] {
            assert_eq!(choice.to_string().parse::<DeviceChoice>(), Ok(choice));
        }
        assert_eq!(DeviceChoice::Cuda(0).to_string(), "cuda:0");
        assert_eq!(DeviceChoice::Cpu.to_string(), "cpu");
    }

    #[test]
    fn cpu_is_chosen_explicitly() {
        let (choice, device) = select(Some(DeviceChoice::Cpu)).unwrap();
        assert_eq!(choice, DeviceChoice::Cpu);
        assert!(device.is_cpu());
    }

    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    #[test]
    fn a_cpu_only_build_defaults_to_the_cpu() {
        assert_eq!(select(None).unwrap().0, DeviceChoice::Cpu);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let e = select(Some(DeviceChoice::Cuda(0))).unwrap_err().to_string();
        assert!(e.contains("cargo build --release --features cuda"), "{e}");
    }

    #[cfg(not(feature = "metal"))]
    #[test]
    fn metal_without_the_feature_says_how_to_build_it() {
        let e = DeviceChoice::Metal(0).open().unwrap_err().to_string();
        assert!(e.contains("--features metal"), "{e}");
    }
}
