//! The anchor of `--keepalived N`: Debian's keepalived VRRP on a fresh lab of the same shape
//! as dsrlb's (3 nodes, 2 backends, 1 client), in the same run, its takeover after a node
//! crash measured with the same ARP-level window (`arp.rs`), so the ratio dsrlb / keepalived
//! compares like with like on the same machine at the same moment.
//!
//! Each node namespace runs `keepalived --vrrp` with one VRRP instance on `eth0`:
//! - **VRRPv3, `advert_int 0.1`**: keepalived accepts sub-second adverts only with version 3.
//!   A backup takes over after `3 × advert_int + (256 − priority) / 256 × advert_int`
//!   without an advert (341 ms at priority 150, 361 ms at 100).
//! - **Priorities 150/100/50** on n1/n2/n3.
//! - **`nopreempt`** (all nodes start as BACKUP, which nopreempt requires), as an operator
//!   would run it: with preemption a node coming back after a crash takes the VIP back, a
//!   second outage for nothing; and dsrlb's restarted node rejoins as a follower without
//!   taking ownership back, so both systems pay one outage per failure.
//! - **Multicast** adverts (224.0.0.18, keepalived's default): the lab bridge floods
//!   link-local multicast to every port, so no peer list is needed.
//! - The VIP as `/32 dev eth0`: the kernel of the master answers ARP for it.
//! - `max_auto_priority`: keepalived logs at every start that it should be set (its VRRP
//!   process goes real-time when it sees itself delayed); the anchor is keepalived as its
//!   own advice tunes it, not a handicapped one.
//!
//! A sample is a node crash: kill -9 of the master's keepalived (its whole process group,
//! parent and VRRP child in one signal) and `ip link set eth0 down` on it at the same instant.
//! The link must go down too: keepalived killed -9 cannot remove the VIP, and the dead
//! master's kernel would answer ARP for it forever — not what a crashed node does, and not
//! what a killed dsrlb does (its datapath answers ARP, and dies with it). Before the next
//! sample the stale VIP is removed, the link brought up, keepalived restarted and the group
//! settled (one VIP holder, the restarted node in BACKUP state, a quiet time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use lab::{Lab, LabProcess, LabSpec};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgid};

use crate::arp::ArpWatch;
use crate::report::{KaRun, KaSample};
use crate::{Args, SETTLE_LIMIT, progress};

/// Priorities of n1, n2, n3.
pub const PRIORITIES: [u8; 3] = [150, 100, 50];
pub const ADVERT_INT: &str = "0.1";
/// Any id works: the lab's bridge carries no other VRRP router.
const VRID: u8 = 51;
const INSTANCE: &str = "VI_LAB";
/// Where a binary may be when `PATH` lacks the sbin directories (a `sudo` without them).
const EXTRA_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// The `keepalived` and `setsid` binaries to run, or a one-line error saying how to get
/// keepalived. Checked before the dsrlb samples, so a missing keepalived costs nothing.
pub fn locate() -> anyhow::Result<(PathBuf, PathBuf)> {
    let Some(keepalived) = find("keepalived") else {
        bail!("--keepalived needs keepalived, which is not installed: apt-get install keepalived");
    };
    // setsid makes keepalived a process group leader, so one killpg kills parent and child.
    let Some(setsid) = find("setsid") else {
        bail!("--keepalived needs setsid, which is not installed: apt-get install util-linux");
    };
    Ok((keepalived, setsid))
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `keepalived --version`'s first line (it prints it on stderr).
pub fn version(keepalived: &Path) -> String {
    match Command::new(keepalived).arg("--version").output() {
        Ok(out) => {
            let text = [out.stderr, out.stdout].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("keepalived (no version line)")
                .trim()
                .to_owned()
        }
        Err(e) => format!("keepalived (--version failed: {e})"),
    }
}

/// The configuration of node `i` (0-based).
pub fn config(i: usize, vip: std::net::Ipv4Addr, ifname: &str) -> String {
    let prio = PRIORITIES[i.min(PRIORITIES.len() - 1)];
    format!(
        "# dsrlb-failbench's keepalived anchor, node n{n}\n\
         global_defs {{\n\
         \x20   router_id n{n}\n\
         \x20   vrrp_version 3\n\
         \x20   max_auto_priority\n\
         }}\n\
         vrrp_instance {INSTANCE} {{\n\
         \x20   state BACKUP\n\
         \x20   interface {ifname}\n\
         \x20   virtual_router_id {VRID}\n\
         \x20   priority {prio}\n\
         \x20   advert_int {ADVERT_INT}\n\
         \x20   nopreempt\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {vip}/32 dev {ifname}\n\
         \x20   }}\n\
         }}\n",
        n = i + 1
    )
}

/// Runs the anchor: a fresh lab, keepalived on every node, `args.keepalived` crashes of the
/// master. The lab and every keepalived are gone when this returns.
pub fn run(
    args: &Args,
    stop: &Arc<AtomicBool>,
    keepalived: &Path,
    setsid: &Path,
) -> anyhow::Result<KaRun> {
    let spec = LabSpec {
        nodes: 3,
        backends: 2,
        clients: 1,
        ..LabSpec::default()
    };
    // keepalived's VRRP child, orphaned by the kill -9 of its parent, is reparented to us
    // and reaped (`reap`) instead of to PID 1, which on some machines (containers, micro-VMs)
    // never reaps and would keep one zombie per sample.
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    progress("keepalived anchor: building a fresh lab (3 nodes, 2 backends, 1 client)");
    let lab = Lab::build(&spec).context("building the keepalived lab")?;
    let dir = lab.dir().join("keepalived");
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ka = KaBench {
        procs: Vec::new(),
        lab,
        dir,
        keepalived: keepalived.to_owned(),
        setsid: setsid.to_owned(),
        args,
        stop: Arc::clone(stop),
    };
    let mut run = KaRun {
        version: version(keepalived),
        samples: Vec::new(),
    };
    progress("keepalived anchor: starting keepalived on 3 nodes");
    for i in 0..ka.lab.nodes().len() {
        let p = ka.spawn(i)?;
        ka.procs.push(p);
    }
    let all: Vec<usize> = (0..ka.procs.len()).collect();
    ka.settle(&all)?;
    for n in 0..args.keepalived {
        ka.check_stop()?;
        let s = ka
            .sample()
            .with_context(|| format!("keepalived kill -9 {}", n + 1))?;
        progress(&format!(
            "keepalived kill -9 {}/{}: {} -> {}, ARP-level outage {}",
            n + 1,
            args.keepalived,
            s.old_master,
            s.new_master.as_deref().unwrap_or("nobody"),
            s.arp
                .outage
                .map_or_else(|| "not recovered".into(), |d| format!("{d:.1?}"))
        ));
        run.samples.push(s);
    }
    Ok(run)
}

struct KaBench<'a> {
    // Before `lab`: the processes go before their namespaces.
    procs: Vec<LabProcess>,
    lab: Lab,
    dir: PathBuf,
    keepalived: PathBuf,
    setsid: PathBuf,
    args: &'a Args,
    stop: Arc<AtomicBool>,
}

impl Drop for KaBench<'_> {
    fn drop(&mut self) {
        // Each keepalived's whole group, so no VRRP child outlives its parent and none is
        // left a zombie (the lab then kills whatever is left in its namespaces).
        for p in &mut self.procs {
            if !matches!(p.try_wait(), Ok(None)) {
                continue;
            }
            let kids = children(p);
            match kill_group(p).and_then(|()| Ok(p.kill()?)) {
                Ok(_) => reap(&kids),
                Err(e) => eprintln!("dsrlb-failbench: {e:#}"),
            }
        }
    }
}

/// SIGKILL to `p`'s process group, which must be its own (started under `setsid`).
fn kill_group(p: &LabProcess) -> anyhow::Result<()> {
    let pid = Pid::from_raw(i32::try_from(p.pid()).context("pid out of range")?);
    let pgid = getpgid(Some(pid)).with_context(|| format!("process group of {}", p.name()))?;
    ensure!(
        pgid == pid,
        "{} is not a process group leader (group {pgid}); setsid did not exec it in place",
        p.name()
    );
    killpg(pid, Signal::SIGKILL).with_context(|| format!("kill -9 the group of {}", p.name()))
}

/// The pids of `p`'s children (keepalived's VRRP child), read before it is killed.
fn children(p: &LabProcess) -> Vec<Pid> {
    let path = format!("/proc/{0}/task/{0}/children", p.pid());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .map(Pid::from_raw)
        .collect()
}

/// How long the orphaned children of a killed keepalived get to be reparented to us.
const REAP_LIMIT: Duration = Duration::from_secs(2);

/// Reaps `kids`, orphans of a killed keepalived that the kernel reparents to us (the child
/// subreaper); bounded, and a child that never becomes ours is left alone.
fn reap(kids: &[Pid]) {
    let deadline = Instant::now() + REAP_LIMIT;
    for &kid in kids {
        loop {
            match waitpid(kid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // Reaped; or not our child, or still dying after the limit: nothing more
                // this bench can do about it.
                _ => break,
            }
        }
    }
}

impl KaBench<'_> {
    fn check_stop(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted; the lab has been removed");
        }
        Ok(())
    }

    fn spawn(&self, i: usize) -> anyhow::Result<LabProcess> {
        let host = &self.lab.nodes()[i];
        let conf = self.dir.join(format!("{}.conf", host.name));
        std::fs::write(&conf, config(i, self.lab.vip(), &host.ifname))
            .with_context(|| format!("writing {}", conf.display()))?;
        let pid = self.dir.join(format!("{}.pid", host.name));
        let vrrp_pid = self.dir.join(format!("{}-vrrp.pid", host.name));
        let args = [
            self.keepalived.as_os_str(),
            "--vrrp".as_ref(),
            "--dont-fork".as_ref(),
            "--log-console".as_ref(),
            "--log-detail".as_ref(),
            // Console only: the machine's syslog is not the lab's.
            "--no-syslog".as_ref(),
            "--use-file".as_ref(),
            conf.as_os_str(),
            "--pid".as_ref(),
            pid.as_os_str(),
            "--vrrp_pid".as_ref(),
            vrrp_pid.as_os_str(),
        ];
        host.spawn(&self.setsid, args)
            .with_context(|| format!("starting keepalived on {}", host.name))
    }

    /// Nodes whose lab interface holds the VIP.
    fn holders(&self) -> anyhow::Result<Vec<usize>> {
        let vip = format!("{}/32", self.lab.vip());
        let mut out = Vec::new();
        for (i, host) in self.lab.nodes().iter().enumerate() {
            let text = host.ip(&["-4", "-o", "addr", "show", "dev", &host.ifname])?;
            if text.split_whitespace().any(|w| w == vip) {
                out.push(i);
            }
        }
        Ok(out)
    }

    fn exited(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.try_wait()? {
                bail!("{} exited ({status}):\n{}", p.name(), p.log_tail(20));
            }
        }
        Ok(())
    }

    /// Waits for every keepalived of `started` to enter a VRRP state and for one node to hold
    /// the VIP, then `quiet_ms` more (the restarted node hears the master's adverts), and
    /// checks that one node still holds it.
    fn settle(&mut self, started: &[usize]) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let deadline = t + SETTLE_LIMIT;
        loop {
            self.check_stop()?;
            self.exited()?;
            let entered = started.iter().all(|&i| {
                let log = self.procs[i].read_log();
                log.contains("Entering BACKUP STATE") || log.contains("Entering MASTER STATE")
            });
            let holders = self.holders()?;
            if entered && holders.len() == 1 {
                break;
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("--- {}:\n{}", p.name(), p.log_tail(10)))
                    .collect();
                bail!(
                    "keepalived did not settle within {SETTLE_LIMIT:?} (VIP on nodes \
                     {holders:?}, every started one in a VRRP state: {entered})\n{}",
                    tails.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ready = t.elapsed();
        let quiet_until = Instant::now() + Duration::from_millis(self.args.quiet_ms);
        while Instant::now() < quiet_until {
            self.check_stop()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        self.exited()?;
        let holders = self.holders()?;
        ensure!(
            holders.len() == 1,
            "after the quiet time the VIP is on nodes {holders:?}, expected one"
        );
        Ok(ready)
    }

    fn sample(&mut self) -> anyhow::Result<KaSample> {
        let i = match self.holders()?.as_slice() {
            [one] => *one,
            other => bail!("expected one VRRP master, found the VIP on nodes {other:?}"),
        };
        let old = self.lab.nodes()[i].clone();
        let limit = Duration::from_millis(self.args.max_outage_ms);
        let watch = ArpWatch::start(&self.lab, limit).context("starting the ARP window")?;

        let kids = children(&self.procs[i]);
        let t0 = Instant::now();
        kill_group(&self.procs[i])?;
        old.ip(&["link", "set", &old.ifname, "down"])?;
        let down_after = t0.elapsed();
        self.procs[i].kill()?;
        reap(&kids);
        let arp = watch.finish(t0, old.mac, &self.stop)?;

        let new_master = arp.new_mac.and_then(|mac| {
            self.lab
                .nodes()
                .iter()
                .find(|n| n.mac == mac)
                .map(|n| n.name.clone())
        });
        // The node comes back as a rebooted one would: without the VIP, link up, keepalived
        // started (as BACKUP; nopreempt keeps it so).
        self.check_stop()?;
        let vip = format!("{}/32", self.lab.vip());
        let stale_vip = self.holders()?.contains(&i);
        if stale_vip {
            old.ip(&["addr", "del", &vip, "dev", &old.ifname])?;
        }
        old.ip(&["link", "set", &old.ifname, "up"])?;
        self.procs[i] = self.spawn(i)?;
        let settle = self.settle(&[i])?;
        Ok(KaSample {
            old_master: old.name.clone(),
            new_master,
            arp,
            down_after,
            stale_vip,
            settle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_instance_the_report_describes() {
        let c = config(1, std::net::Ipv4Addr::new(198, 18, 0, 100), "eth0");
        for want in [
            "router_id n2",
            "vrrp_version 3",
            "state BACKUP",
            "interface eth0",
            "priority 100",
            "advert_int 0.1",
            "nopreempt",
            "max_auto_priority",
            "198.18.0.100/32 dev eth0",
        ] {
            assert!(c.contains(want), "{want:?} missing from\n{c}");
        }
        assert!(
            config(0, std::net::Ipv4Addr::new(198, 18, 0, 100), "eth0").contains("priority 150")
        );
    }
}
