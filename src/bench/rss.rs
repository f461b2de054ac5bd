//! Peak resident memory of this process (the in-process wick server plus the small bench
//! client), or of the compared server's, from Linux's `/proc/<pid>/status`.

/// `VmHWM` in MiB, or `None` where `/proc` is absent (not Linux).
pub fn peak_rss_mib() -> Option<f64> {
    read("/proc/self/status")
}

/// The same for another process.
pub fn peak_rss_mib_of(pid: u32) -> Option<f64> {
    read(&format!("/proc/{pid}/status"))
}

fn read(path: &str) -> Option<f64> {
    let status = std::fs::read_to_string(path).ok()?;
    parse_vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

/// The `VmHWM:   123456 kB` line's number.
fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_hwm() {
        let status = "Name:\twick\nVmPeak:\t  900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  100 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(204800));
        assert_eq!(parse_vm_hwm_kib("Name:\twick\n"), None);
    }
}
