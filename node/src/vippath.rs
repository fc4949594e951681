//! The routes of the DSR-aware check (`via_vip = true`, docs/design.md#health): a probe to
//! the VIP that the node's kernel delivers to one chosen backend's MAC.
//!
//! Why policy routing of marked sockets rather than a raw exchange on the packet socket: the
//! probe stays a real kernel socket, so every check type (tcp, http, https, udp) works
//! through the VIP unchanged, with the kernel's TCP, retransmits and TLS; a raw exchange
//! would mean a TCP stack of our own, and the kernel would reset the handshake it never
//! opened. Each backend gets a routing table holding one route, `default via <backend> dev
//! <interface>`, and one rule `fwmark <mark> lookup <table>`; a probe socket carries that
//! backend's mark (SO_MARK), so its packets to the VIP leave with the backend's MAC as
//! next hop. Nothing else carries the mark, so no other traffic changes route, and no address
//! is added: the node's kernel never holds or answers for the VIP. The backend answers from
//! the VIP (held on its `lo`) to the node's own address, which the kernel accepts as the
//! reply on the probe's socket.
//!
//! Everything this module adds carries a fixed rule priority ([`RULE_PREF`]) and tables in
//! a fixed range ([`TABLE_BASE`]…): a stop removes them, and a start first removes whatever
//! a killed predecessor left ([`clean`]). The rules and routes are applied with `ip -batch`
//! (iproute2), one process for every backend at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The priority of every rule this module adds: before `main` (32766), after `local` (0).
pub const RULE_PREF: u32 = 3210;
/// The first table (and mark) used; a backend's is `TABLE_BASE + index` ("DS" in the high
/// half, so a mark of ours is recognisable in `ip rule`).
pub const TABLE_BASE: u32 = 0x4453_0000;
/// Backends one node can check through their VIP.
pub const MAX_PATHS: usize = 0xffff;

/// The per-backend routes of one running checker. Not removed on drop (the old checker's
/// tasks may still hold it while the next one sets up): the daemon calls [`clean`] when
/// checks stop, and [`VipPaths::setup`] cleans first.
#[derive(Debug)]
pub struct VipPaths {
    marks: BTreeMap<Ipv4Addr, u32>,
}

impl VipPaths {
    /// Removes what an earlier run left, then sets up one path per backend address on
    /// `interface`.
    pub fn setup(
        interface: &str,
        backends: impl IntoIterator<Item = Ipv4Addr>,
    ) -> std::io::Result<Self> {
        clean()?;
        let mut marks = BTreeMap::new();
        for ip in backends {
            let next = TABLE_BASE + marks.len() as u32;
            marks.entry(ip).or_insert(next);
        }
        if marks.len() > MAX_PATHS {
            return Err(std::io::Error::other(format!(
                "{} backends checked via their VIP, at most {MAX_PATHS}",
                marks.len()
            )));
        }
        let mut batch = String::new();
        for (ip, mark) in &marks {
            batch.push_str(&format!(
                "route replace default via {ip} dev {interface} table {mark}\n\
                 rule add fwmark {mark} lookup {mark} pref {RULE_PREF}\n"
            ));
        }
        if !batch.is_empty()
            && let Err(e) = ip_batch(&batch, false)
        {
            let _ = clean();
            return Err(e);
        }
        Ok(VipPaths { marks })
    }

    /// The socket mark that routes to `backend`, if it has a path.
    pub fn mark(&self, backend: Ipv4Addr) -> Option<u32> {
        self.marks.get(&backend).copied()
    }

    /// How many backends have a path.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

/// Removes every rule of [`RULE_PREF`] and flushes every table of ours: what a stopped or
/// killed run left. Returns how many rules were removed.
pub fn clean() -> std::io::Result<usize> {
    let rules = ip_json(&["-4", "rule", "show"])?;
    let ours: Vec<u64> = rules
        .iter()
        .filter(|r| r.get("priority").and_then(|p| p.as_u64()) == Some(u64::from(RULE_PREF)))
        .filter_map(table_of)
        .collect();
    let mut tables: Vec<u64> = ours.clone();
    for route in ip_json(&["-4", "route", "show", "table", "all"])? {
        if let Some(t) = table_of(&route)
            && is_ours(t)
        {
            tables.push(t);
        }
    }
    tables.sort_unstable();
    tables.dedup();
    let mut batch = String::new();
    for _ in 0..rules
        .iter()
        .filter(|r| r.get("priority").and_then(|p| p.as_u64()) == Some(u64::from(RULE_PREF)))
        .count()
    {
        batch.push_str(&format!("rule del pref {RULE_PREF}\n"));
    }
    for t in tables.iter().filter(|t| is_ours(**t)) {
        batch.push_str(&format!("route flush table {t}\n"));
    }
    if !batch.is_empty() {
        ip_batch(&batch, true)?;
    }
    Ok(ours.len())
}

fn is_ours(table: u64) -> bool {
    (u64::from(TABLE_BASE)..u64::from(TABLE_BASE) + MAX_PATHS as u64).contains(&table)
}

/// A rule's or route's table, as a number (`ip -j` writes names for known tables).
fn table_of(v: &serde_json::Value) -> Option<u64> {
    match v.get("table")? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn ip_json(args: &[&str]) -> std::io::Result<Vec<serde_json::Value>> {
    let out = Command::new("ip").arg("-j").args(args).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&out.stdout).map_err(std::io::Error::other)
}

/// Runs `ip -batch -` on `commands`; with `force`, going on past a failing line.
fn ip_batch(commands: &str, force: bool) -> std::io::Result<()> {
    let mut cmd = Command::new("ip");
    if force {
        cmd.arg("-force");
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(commands.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() && !force {
        return Err(std::io::Error::other(format!(
            "ip -batch: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
