//! What the lab benchmarks (`dsrlb-labbench`, `-failbench`, `-persistbench`) share: finding
//! the `dsrlb` they run, and the facts their report headers print about the machine and
//! the lab's hosts.

use std::path::PathBuf;

use super::{Host, LabError};

/// The `dsrlb` the lab runs: `given` (the `--dsrlb` flag), else the sibling of this
/// executable.
pub fn locate_dsrlb(given: Option<PathBuf>) -> Result<PathBuf, LabError> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| LabError::io("locating this executable", e))?
            .with_file_name("dsrlb"),
    };
    if !path.is_file() {
        return Err(LabError::File {
            what: "no dsrlb binary (cargo build --release -p node builds it) at",
            path,
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    Ok(path)
}

/// CPUs this process may run on, and the kernel release.
pub fn machine() -> (usize, String) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    (cpus, kernel)
}

/// `name ip, name ip, …` of `hosts`.
pub fn host_list(hosts: &[Host]) -> String {
    hosts
        .iter()
        .map(|h| format!("{} {}", h.name, h.ip))
        .collect::<Vec<_>>()
        .join(", ")
}
