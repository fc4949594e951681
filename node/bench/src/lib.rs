//! The lab benchmarks (`dsrlb-labbench`, `dsrlb-failbench`, `dsrlb-persistbench`, one
//! binary each under `src/bin`) and what they share: finding the `dsrlb` they run, and the
//! facts their report headers print about the machine and the lab's hosts. They build their
//! hosts with the `lab` crate and drive real `dsrlb` processes; the daemon's crate is used
//! only to check a node config before a run starts.

pub mod json;

use anyhow::{Context, bail};
use lab::{Host, Lab, LabError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A benchmark's `main`: runs `run` and turns its error into `<name>: <error, with causes>`
/// on stderr and exit status 1.
pub fn main(name: &str, run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One progress line on stderr (stdout is the report's, or its JSON's).
pub fn progress(name: &str, what: &str) {
    eprintln!("{name}: {what}");
}

/// What every lab benchmark needs before it builds its lab: root, the `dsrlb` to run, and a
/// flag that Ctrl-C or SIGTERM sets, so a run stops between phases and the lab is removed.
pub struct Start {
    pub dsrlb: PathBuf,
    pub stop: Arc<AtomicBool>,
}

/// Checks for root, finds `dsrlb` (`given` is the `--dsrlb` flag) and installs the stop flag.
pub fn start(given: Option<PathBuf>) -> anyhow::Result<Start> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark builds network namespaces and needs root: run it with sudo");
    }
    let dsrlb = locate_dsrlb(given)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the Ctrl-C handler")?;
    }
    Ok(Start { dsrlb, stop })
}

/// Prints the report: its table on stdout, or with `--json` the JSON on stdout and the table
/// on stderr (a person watching still sees it; a script reads only the JSON).
pub fn print_report(as_json: bool, table: impl std::fmt::Display, json: impl std::fmt::Display) {
    if as_json {
        eprint!("{table}");
        println!("{json}");
    } else {
        print!("{table}");
    }
}

/// The report header's first line: `<name>: lab <prefix> — nodes …; backends …; client …;
/// VIP <vip><vip_suffix>`.
pub fn lab_line(name: &str, lab: &Lab, vip_suffix: &str) -> String {
    format!(
        "{name}: lab {} — nodes {}; backends {}; client {}; VIP {}{vip_suffix}",
        lab.prefix(),
        host_list(lab.nodes()),
        host_list(lab.backends()),
        host_list(lab.clients()),
        lab.vip()
    )
}

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
