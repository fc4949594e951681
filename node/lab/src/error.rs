//! The lab's one error type: every failure names the command, host or address it concerns,
//! so a failing test or `dsrlb demo` says what broke without a rerun under strace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The spec asks for something the lab cannot build (caller's fault; retrying won't help).
    #[error("invalid lab spec: {0}")]
    Spec(String),
    /// A helper program (`ip`, `sh`, ...) could not be started at all.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A helper program ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// No free per-run prefix was found: too many labs exist at once (stale ones?).
    #[error("no free lab prefix after {tries} tries (stale namespaces? see `ip netns list`)")]
    NoFreePrefix { tries: u32 },
    /// A file or directory operation of the lab itself failed.
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Entering a network namespace failed (it is gone, or we lack CAP_SYS_ADMIN).
    #[error("cannot enter network namespace {netns}: {source}")]
    Setns {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    /// A socket or thread operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A process of the lab did not become ready in time; the tail of its log says why.
    #[error("{name} not ready after {waited:?}: {detail}")]
    NotReady {
        name: String,
        waited: Duration,
        detail: String,
    },
    /// A peer answered something that is not valid HTTP/1.1 (or not what we asked for).
    #[error("bad HTTP from {addr}: {what}")]
    Http { addr: SocketAddr, what: String },
    /// The peer answered with an unexpected status.
    #[error("HTTP {status} from {addr}: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    /// A byte of a pattern stream differed from `i % 251`: data was corrupted on the way.
    #[error("pattern mismatch from {addr} at offset {offset}: expected {expected}, got {got}")]
    Corrupt {
        addr: SocketAddr,
        offset: u64,
        expected: u8,
        got: u8,
    },
    /// A stream ended before (or went on after) the announced length.
    #[error("short transfer from {addr}: expected {expected} bytes, got {got}")]
    Short {
        addr: SocketAddr,
        expected: u64,
        got: u64,
    },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}
