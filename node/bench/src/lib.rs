//! The lab benchmarks (`dsrlb-labbench`, `dsrlb-failbench`, `dsrlb-persistbench`, one
//! binary each under `src/bin`) and what they share: finding the `dsrlb` they run, and the
//! facts their report headers print about the machine and the lab's hosts. They build their
//! hosts with the `lab` crate and drive real `dsrlb` processes; the daemon's crate is used
//! only to check a node config before a run starts.

use lab::{Host, LabError};
use std::path::PathBuf;

/// The `dsrlb` the lab runs: `given` (the `--dsrlb` flag), else the one built beside this
/// executable.
pub fn locate_dsrlb(given: Option<PathBuf>) -> Result<PathBuf, LabError> {
    let Some(path) = given else {
        return lab::binary("dsrlb");
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
