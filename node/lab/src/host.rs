//! `Host`: one machine of the lab (a network namespace with `eth0` on the lab bridge), and
//! the ways to use it: run a closure inside it, spawn a program in it, run `ip` in it.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::netns::{in_netns, ip, run_command};
use super::{LabError, LabProcess};

/// Lab hosts use the datapath's MAC type, so lab and node values compare directly.
pub use datapath::MacAddr;

/// What a host is for; decides its address range and name letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A load-balancer node (`n1`, 198.18.0.11, ...).
    Node,
    /// A backend server (`b1`, 198.18.0.21, ...), set up with `backend-setup.sh`.
    Backend,
    /// A client (`c1`, 198.18.0.31, ...).
    Client,
    /// Another load balancer to compare against (`x1`, 198.18.0.1, ...): holds no dsrlb,
    /// see [`crate::nftlb`].
    OtherLb,
}

/// Numbers the log files of one lab so a restarted program never overwrites its old log.
static LOG_SEQ: AtomicU32 = AtomicU32::new(0);

/// One lab host. Cheap to clone; clones refer to the same namespace.
#[derive(Clone, Debug)]
pub struct Host {
    /// Short name inside the lab: `n1`, `b2`, `c1`.
    pub name: String,
    /// The network namespace (`<prefix>-<name>`), usable with `ip netns exec`.
    pub netns: String,
    /// The host's interface to the lab bridge; always `eth0`.
    pub ifname: String,
    /// Primary address of `ifname` (a /24 in 198.18.0.0/24).
    pub ip: Ipv4Addr,
    /// Its IPv6 address (2001:db8::/64) in a lab built with `LabSpec::ipv6`.
    pub ip6: Option<Ipv6Addr>,
    /// MAC of `ifname`, fixed by the lab so captures are easy to read.
    pub mac: MacAddr,
    /// What the host is for.
    pub role: Role,
    /// The lab's temp dir, where logs go.
    pub(crate) dir: Arc<PathBuf>,
}

impl Host {
    /// `ip:port` of this host.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip, port))
    }

    /// `[ip6]:port` of this host.
    ///
    /// # Panics
    /// In a lab without IPv6.
    pub fn addr6(&self, port: u16) -> SocketAddr {
        let ip = self
            .ip6
            .expect("the lab was built without IPv6 (LabSpec::ipv6)");
        SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))
    }

    /// Runs `f` on a fresh thread that first enters this host's network namespace, and
    /// returns its result: sockets `f` opens are real sockets of this host, and threads it
    /// starts are in this host too (they inherit the namespace). A panic in `f` propagates
    /// to the caller.
    ///
    /// # Panics
    /// If the namespace cannot be entered (the lab was dropped, or we are not root); use
    /// [`Host::try_run`] to get that as an error.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        match self.try_run(f) {
            Ok(r) => r,
            Err(e) => panic!("lab host {}: {e}", self.name),
        }
    }

    /// Like [`Host::run`], but failing to enter the namespace is an error.
    pub fn try_run<F, R>(&self, f: F) -> Result<R, LabError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        in_netns(&self.netns, f)
    }

    /// Starts `program args…` inside this host (`ip netns exec`), stdout and stderr appended
    /// to a log file in the lab dir. The returned process is killed when dropped.
    pub fn spawn<I, S>(&self, program: &Path, args: I) -> Result<LabProcess, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_with_env(program, args, std::iter::empty::<(&str, &str)>())
    }

    /// [`Host::spawn`] with extra environment variables (e.g. `RUST_LOG`).
    pub fn spawn_with_env<I, S, E, K, V>(
        &self,
        program: &Path,
        args: I,
        envs: E,
    ) -> Result<LabProcess, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let prog_name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "prog".to_owned());
        let seq = LOG_SEQ.fetch_add(1, Ordering::Relaxed);
        let log = self
            .dir
            .join(format!("{}-{prog_name}-{seq}.log", self.name));
        let out = File::create(&log).map_err(|source| LabError::File {
            what: "create log",
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| LabError::File {
            what: "dup log",
            path: log.clone(),
            source,
        })?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(program)
            .args(args)
            .envs(envs)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: format!("ip netns exec {} {}", self.netns, program.display()),
            source,
        })?;
        Ok(LabProcess::new(
            format!("{}/{prog_name}", self.name),
            child,
            log,
        ))
    }

    /// Runs `program args…` inside this host to completion; a non-zero exit is an error.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<Output, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(
            Command::new("ip")
                .args(["netns", "exec", &self.netns, program])
                .args(args)
                .stdin(Stdio::null()),
        )
    }

    /// Runs `ip -n <netns> ARGS` (e.g. `["link", "set", "eth0", "down"]` to cut the host
    /// off) and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut all = vec!["-n", self.netns.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Forgets every learned neighbour (ARP entry), so the next packet ARPs again.
    pub fn flush_neighbors(&self) -> Result<(), LabError> {
        self.ip(&["neigh", "flush", "dev", &self.ifname]).map(drop)
    }

    /// Reads `/proc/sys/<path>` (e.g. `net/ipv4/ip_forward`) as this host sees it.
    pub fn sysctl(&self, path: &str) -> Result<String, LabError> {
        let full = Path::new("/proc/sys").join(path);
        self.try_run(|| std::fs::read_to_string(&full))?
            .map(|s| s.trim().to_owned())
            .map_err(|source| LabError::File {
                what: "read",
                path: full.clone(),
                source,
            })
    }

    /// Writes `/proc/sys/<path>` in this host only (the sysctls under `net/` are per
    /// namespace, so the machine's own settings are never touched).
    pub fn set_sysctl(&self, path: &str, value: &str) -> Result<(), LabError> {
        if !path.starts_with("net/") {
            return Err(LabError::Spec(format!(
                "refusing to write /proc/sys/{path}: only per-namespace net/ sysctls are allowed"
            )));
        }
        let full = Path::new("/proc/sys").join(path);
        self.try_run(|| std::fs::write(&full, value))?
            .map_err(|source| LabError::File {
                what: "write",
                path: full.clone(),
                source,
            })
    }
}
