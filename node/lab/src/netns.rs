//! Thin helpers around network namespaces: running `ip`, entering a namespace on a thread,
//! listing the processes inside one. Everything that touches a namespace goes through here.

use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output};

use nix::sched::{CloneFlags, setns};

use super::LabError;

/// Where iproute2 keeps its named namespaces (`NETNS_RUN_DIR`).
const NETNS_RUN_DIR: &str = "/var/run/netns";

pub(crate) fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

pub(crate) fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Renders a command line for error messages.
fn describe(program: &OsStr, args: &[&OsStr]) -> String {
    let mut s = program.to_string_lossy().into_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub(crate) fn run_command(cmd: &mut Command) -> Result<Output, LabError> {
    let args: Vec<&OsStr> = cmd.get_args().collect();
    let line = describe(cmd.get_program(), &args);
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError::Command {
            cmd: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip ARGS` and returns its stdout.
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    let out = run_command(Command::new("ip").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Moves the calling thread into the named network namespace. Only the calling thread moves:
/// sockets it opens afterwards live in that namespace, the rest of the process stays put.
pub(crate) fn enter(netns: &str) -> Result<(), LabError> {
    let file = File::open(netns_path(netns)).map_err(|source| LabError::Setns {
        netns: netns.to_owned(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| LabError::Setns {
        netns: netns.to_owned(),
        source: std::io::Error::from(errno),
    })
}

/// Runs `f` on a fresh scoped thread inside `netns` and returns its result. A panic in `f`
/// is re-raised in the caller, so assertions inside lab closures fail the test as usual.
pub(crate) fn in_netns<F, R>(netns: &str, f: F) -> Result<R, LabError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(format!("lab-{netns}"))
            .spawn_scoped(scope, || -> Result<R, LabError> {
                enter(netns)?;
                Ok(f())
            })
            .map_err(|e| LabError::io(format!("spawn thread for netns {netns}"), e))?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Pids of the processes whose network namespace is `netns` (as `ip netns pids` sees them).
pub(crate) fn pids_in(netns: &str) -> Result<Vec<i32>, LabError> {
    let out = ip(&["netns", "pids", netns])?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .collect())
}
