//! dsrlb nodes in the lab: writing a node's config from a farm description, starting
//! `dsrlb run` in a node host, waiting until it owns the VIP with every backend resolved,
//! and reading its Prometheus metrics — what tests, benchmarks and the demo all need.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::client::http_get;
use super::{Host, Lab, LabError, LabProcess};

/// The metrics port every lab node listens on (inside its own namespace).
pub const METRICS_PORT: u16 = 7102;

/// A farm as the lab writes it into node configs.
#[derive(Clone, Debug)]
pub struct LabFarm {
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub port: u16,
    /// (backend index in the lab, weight).
    pub backends: Vec<(usize, u32)>,
    /// `(interval_ms, rise, fall)` of a TCP check; `None` for no check.
    pub check: Option<(u64, u32, u32)>,
    /// `persistence_ttl` of source-IP persistence (e.g. `"60s"`); `None`: no persistence.
    pub persistence_ttl: Option<String>,
    /// `scheduler`; `None`: the default.
    pub scheduler: Option<&'static str>,
    /// Lines appended to the `[[farm]]` table verbatim (e.g. limits).
    pub extra: String,
    /// The farm's VIP; `None`: the lab's. An IPv6 VIP lists the backends by their IPv6
    /// addresses (a lab built with `LabSpec::ipv6`).
    pub vip: Option<std::net::IpAddr>,
}

impl LabFarm {
    /// A farm over the given backends with weight 1 each.
    pub fn new(name: &str, protocol: &'static str, port: u16, backends: &[usize]) -> Self {
        LabFarm {
            name: name.into(),
            protocol,
            port,
            backends: backends.iter().map(|b| (*b, 1)).collect(),
            check: None,
            persistence_ttl: None,
            scheduler: None,
            extra: String::new(),
            vip: None,
        }
    }

    /// The same farm on `vip` (e.g. the lab's IPv6 VIP; a lab without IPv6 refuses to write
    /// the config of an IPv6 farm: its backends have no IPv6 address).
    pub fn on_vip(mut self, vip: impl Into<std::net::IpAddr>) -> Self {
        self.vip = Some(vip.into());
        self
    }

    /// The same farm with source-IP persistence of `ttl` (e.g. `"60s"`).
    pub fn with_persistence(mut self, ttl: &str) -> Self {
        self.persistence_ttl = Some(ttl.to_string());
        self
    }
}

/// Prometheus text, parsed just enough for tests: `name{labels} value` samples.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: Vec<(String, f64)>,
}

impl Metrics {
    /// Parses the text exposition format.
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.trim().parse().ok()?))
            })
            .collect();
        Metrics { samples }
    }

    /// The value of `name` with exactly these labels (in any order); 0 if absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .find(|(series, _)| series_matches(series, name, labels))
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    }

    /// Sum of every sample of `name`, whatever its labels.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| series == name || series.starts_with(&format!("{name}{{")))
            .map(|(_, v)| *v)
            .sum()
    }

    /// Every sample of `name` that has label `label`, as (that label's value, sample value)
    /// in exposition order: a histogram's buckets by `le`, or a family by its one label.
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let key = format!("{label}=\"");
        self.samples
            .iter()
            .filter_map(|(series, v)| {
                let rest = series.strip_prefix(name)?.strip_prefix('{')?;
                let value = rest.split(',').find_map(|kv| kv.strip_prefix(&key))?;
                let value = value.trim_end_matches('}').strip_suffix('"')?;
                Some((value.to_string(), *v))
            })
            .collect()
    }
}

fn series_matches(series: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    let (n, rest) = match series.split_once('{') {
        Some((n, rest)) => (n, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    if n != name {
        return false;
    }
    let have: Vec<&str> = rest.split(',').filter(|s| !s.is_empty()).collect();
    have.len() == labels.len()
        && labels
            .iter()
            .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()))
}

/// The peer port every lab node's Raft service listens on.
pub const PEER_PORT: u16 = 7100;

/// The admin port every lab node's admin API listens on (at the node's lab address).
pub const ADMIN_PORT: u16 = 7101;

/// How a lab node is configured beyond its farms.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Votes but never owns a VIP.
    pub witness: bool,
    /// Lines appended to the `[cluster]` table (e.g. timing), verbatim.
    pub cluster_extra: String,
    /// Lines appended to the `[datapath]` table (e.g. `ring_slots`), verbatim.
    pub datapath_extra: String,
    /// Members that are not lab nodes, as `(id, address)`: a `dsrlb witness` in another
    /// host ([`Lab::spawn_witness`]).
    pub extra_members: Vec<(u64, std::net::Ipv4Addr)>,
    /// `[datapath] io`: by default [`lab_io`], so one environment variable runs every lab
    /// test on the other I/O backend.
    pub io: String,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            witness: false,
            cluster_extra: String::new(),
            datapath_extra: String::new(),
            extra_members: Vec::new(),
            io: lab_io(),
        }
    }
}

/// The I/O backend lab nodes run: `DSRLB_LAB_IO` (`af_packet`, `af_xdp` or `auto`), else
/// `af_packet`. CI runs the lab and chaos tests once per backend with it.
pub fn lab_io() -> String {
    std::env::var("DSRLB_LAB_IO").unwrap_or_else(|_| "af_packet".to_owned())
}

impl Lab {
    /// The config of node `i` serving `farms`: a cluster of one when the lab has one node,
    /// otherwise a member of a cluster of every lab node; metrics on [`METRICS_PORT`].
    pub fn node_config(&self, i: usize, farms: &[LabFarm]) -> Result<String, LabError> {
        self.node_config_with(i, farms, &NodeOptions::default())
    }

    /// [`Lab::node_config`] with options.
    pub fn node_config_with(
        &self,
        i: usize,
        farms: &[LabFarm],
        opts: &NodeOptions,
    ) -> Result<String, LabError> {
        let all: Vec<usize> = (0..self.nodes().len()).collect();
        self.node_config_members(i, farms, opts, &all)
    }

    /// [`Lab::node_config_with`] for a cluster whose initial members are the lab nodes
    /// `members` (node `i` among them): how a node joins later — the cluster starts without
    /// it, and it starts listing the cluster and itself, waiting to be added.
    pub fn node_config_members(
        &self,
        i: usize,
        farms: &[LabFarm],
        opts: &NodeOptions,
        members: &[usize],
    ) -> Result<String, LabError> {
        let node = self
            .nodes()
            .get(i)
            .ok_or_else(|| LabError::Spec(format!("no node {i}")))?;
        let mut c = String::new();
        let data_dir = self.dir().join(format!("{}-data", node.name));
        // Writing into a String cannot fail.
        let _ = write!(
            c,
            "[node]\nid = {}\ndata_dir = {:?}\n\n[datapath]\ninterface = {:?}\nworkers = 2\nio = {:?}\n{}\n\
             [metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n\n\
             [admin]\nlisten = \"{}:{ADMIN_PORT}\"\ntoken_file = {:?}\n\n\
             [cluster]\nlisten = \"{}:{PEER_PORT}\"\nwitness = {}\n{}\n",
            i + 1,
            data_dir.display().to_string(),
            node.ifname,
            opts.io,
            opts.datapath_extra,
            node.ip,
            self.admin_token_file()?.display().to_string(),
            node.ip,
            opts.witness,
            opts.cluster_extra,
        );
        if self.nodes().len() > 1 || !opts.extra_members.is_empty() {
            let members: Vec<String> = self
                .nodes()
                .iter()
                .enumerate()
                .filter(|(k, _)| members.contains(k))
                .map(|(k, n)| (k as u64 + 1, n.ip))
                .chain(opts.extra_members.iter().copied())
                .map(|(id, ip)| format!("\"{id}={ip}:{PEER_PORT}\""))
                .collect();
            let _ = write!(
                c,
                "members = [{}]\ntoken_file = {:?}\n",
                members.join(", "),
                self.cluster_token_file()?.display().to_string()
            );
        }
        for farm in farms {
            let _ = write!(
                c,
                "\n[[farm]]\nname = {:?}\nvip = \"{}\"\nport = {}\nprotocol = {:?}\n",
                farm.name,
                farm.vip.unwrap_or(self.vip().into()),
                farm.port,
                farm.protocol
            );
            if let Some(ttl) = &farm.persistence_ttl {
                let _ = write!(c, "persistence = \"srcip\"\npersistence_ttl = {ttl:?}\n");
            }
            if let Some(s) = farm.scheduler {
                let _ = writeln!(c, "scheduler = {s:?}");
            }
            c.push_str(&farm.extra);
            if let Some((interval, rise, fall)) = farm.check {
                let _ = write!(
                    c,
                    "\n[farm.check]\ntype = \"tcp\"\ninterval = \"{interval}ms\"\n\
                     timeout = \"{}ms\"\nrise = {rise}\nfall = {fall}\n",
                    (interval / 2).max(1)
                );
            }
            for (b, weight) in &farm.backends {
                let host = self
                    .backends()
                    .get(*b)
                    .ok_or_else(|| LabError::Spec(format!("farm {}: no backend {b}", farm.name)))?;
                let ip: std::net::IpAddr = match (farm.vip, host.ip6) {
                    (Some(std::net::IpAddr::V6(_)), Some(ip6)) => ip6.into(),
                    (Some(std::net::IpAddr::V6(_)), None) => {
                        return Err(LabError::Spec(format!(
                            "farm {}: an IPv6 VIP in a lab without IPv6 (LabSpec::ipv6)",
                            farm.name
                        )));
                    }
                    _ => host.ip.into(),
                };
                let _ = write!(
                    c,
                    "\n[[farm.backend]]\nname = {:?}\nip = \"{}\"\nweight = {weight}\n",
                    host.name, ip
                );
            }
        }
        Ok(c)
    }

    /// The lab's cluster token file, created on first use.
    pub fn cluster_token_file(&self) -> Result<std::path::PathBuf, LabError> {
        let path = self.dir().join("cluster.token");
        if !path.exists() {
            let token = format!(
                "lab-cluster-token-{}-{:x}",
                self.prefix(),
                std::process::id()
            );
            write_private(&path, token.as_bytes()).map_err(|source| LabError::File {
                what: "write cluster token",
                path: path.clone(),
                source,
            })?;
        }
        Ok(path)
    }

    /// The lab's admin token file (every node uses it), created on first use.
    pub fn admin_token_file(&self) -> Result<std::path::PathBuf, LabError> {
        let path = self.dir().join("admin.token");
        if !path.exists() {
            let token = format!("lab-admin-token-{}-{:x}", self.prefix(), std::process::id());
            write_private(&path, token.as_bytes()).map_err(|source| LabError::File {
                what: "write admin token",
                path: path.clone(),
                source,
            })?;
        }
        Ok(path)
    }

    /// The admin token itself, for test clients.
    pub fn admin_token(&self) -> Result<String, LabError> {
        let path = self.admin_token_file()?;
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|source| LabError::File {
                what: "read admin token",
                path,
                source,
            })
    }

    /// Writes node `i`'s config and starts `dsrlb run` in its host, without waiting.
    pub fn spawn_node(
        &self,
        i: usize,
        dsrlb: &Path,
        farms: &[LabFarm],
        opts: &NodeOptions,
    ) -> Result<LabProcess, LabError> {
        let all: Vec<usize> = (0..self.nodes().len()).collect();
        self.spawn_node_members(i, dsrlb, farms, opts, &all)
    }

    /// [`Lab::spawn_node`] with the initial members of [`Lab::node_config_members`].
    pub fn spawn_node_members(
        &self,
        i: usize,
        dsrlb: &Path,
        farms: &[LabFarm],
        opts: &NodeOptions,
        members: &[usize],
    ) -> Result<LabProcess, LabError> {
        let text = self.node_config_members(i, farms, opts, members)?;
        self.spawn_node_config(i, dsrlb, &text)
    }

    /// Writes `config` (e.g. a [`Lab::node_config_with`] text with keys added, such as the
    /// `[admin]` TLS files) as node `i`'s config and starts `dsrlb run` with it.
    pub fn spawn_node_config(
        &self,
        i: usize,
        dsrlb: &Path,
        config: &str,
    ) -> Result<LabProcess, LabError> {
        let node = self
            .nodes()
            .get(i)
            .ok_or_else(|| LabError::Spec(format!("no node {i}")))?
            .clone();
        let path = self.dir().join(format!("{}.toml", node.name));
        std::fs::write(&path, config).map_err(|source| LabError::File {
            what: "write node config",
            path: path.clone(),
            source,
        })?;
        let mut env = vec![("RUST_LOG".to_owned(), "info".to_owned())];
        env.extend(self.fake_clock_env(i)?);
        node.spawn_with_env(
            dsrlb,
            ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
            env,
        )
    }

    /// Where node `i`'s wall-clock offset is kept once [`Lab::set_clock_offset`] was called.
    fn clock_file(&self, i: usize) -> PathBuf {
        self.dir().join(format!("n{}.faketime", i + 1))
    }

    /// Sets node `i`'s wall-clock offset, in libfaketime's syntax (`"+0"`, `"+1h"`, `"-1h"`).
    /// Every start of the node from then on runs it under libfaketime (Debian's `faketime`
    /// package), which reads the offset from a file at each call, so a running node takes
    /// a new offset at once: the lab can step one node's clock without touching the
    /// machine's. Monotonic clocks are not faked (timers, leases and Raft run on them).
    pub fn set_clock_offset(&self, i: usize, offset: &str) -> Result<(), LabError> {
        if i >= self.nodes().len() {
            return Err(LabError::Spec(format!("no node {i}")));
        }
        let path = self.clock_file(i);
        // Written whole and renamed, so the node never reads half an offset.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| LabError::File {
                what: "write clock offset",
                path,
                source,
            })
    }

    /// The environment that runs node `i` under libfaketime, if its clock is faked.
    fn fake_clock_env(&self, i: usize) -> Result<Vec<(String, String)>, LabError> {
        let file = self.clock_file(i);
        if !file.exists() {
            return Ok(Vec::new());
        }
        let lib = libfaketime().ok_or_else(|| {
            LabError::Spec(format!(
                "node {i}'s clock is faked but libfaketime is not installed (apt-get install \
                 faketime; looked for {LIBFAKETIME_NAME} under /usr/lib/*/faketime)"
            ))
        })?;
        Ok(vec![
            ("LD_PRELOAD".into(), lib.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
            // Re-read at every call: the step takes effect at once, not after a cache period.
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ])
    }

    /// Writes node `i`'s config and starts `dsrlb run` in its host; waits until it owns the
    /// VIP and every configured backend is up (MAC learned, checks passing). For a lab with
    /// one node.
    pub fn start_node(
        &self,
        i: usize,
        dsrlb: &Path,
        farms: &[LabFarm],
    ) -> Result<LabProcess, LabError> {
        self.start_node_with(i, dsrlb, farms, &NodeOptions::default())
    }

    /// [`Lab::start_node`] with options.
    pub fn start_node_with(
        &self,
        i: usize,
        dsrlb: &Path,
        farms: &[LabFarm],
        opts: &NodeOptions,
    ) -> Result<LabProcess, LabError> {
        let mut procs = vec![self.spawn_node(i, dsrlb, farms, opts)?];
        self.wait_ready(&mut procs, &[i], farms, Duration::from_secs(15))?;
        Ok(procs.pop().expect("one process"))
    }

    /// Starts every lab node as one cluster (node `k` a witness if `witnesses` lists it) and
    /// waits until exactly one owns the VIP and every non-witness node has every backend up.
    pub fn start_cluster(
        &self,
        dsrlb: &Path,
        farms: &[LabFarm],
        witnesses: &[usize],
    ) -> Result<Vec<LabProcess>, LabError> {
        let mut procs = Vec::new();
        for i in 0..self.nodes().len() {
            let opts = NodeOptions {
                witness: witnesses.contains(&i),
                ..NodeOptions::default()
            };
            procs.push(self.spawn_node(i, dsrlb, farms, &opts)?);
        }
        let all: Vec<usize> = (0..self.nodes().len()).collect();
        self.wait_ready_with_witnesses(
            &mut procs,
            &all,
            witnesses,
            farms,
            Duration::from_secs(20),
        )?;
        Ok(procs)
    }

    /// The node indexes whose metrics say they own the VIP right now.
    pub fn owners(&self) -> Vec<usize> {
        self.nodes()
            .iter()
            .enumerate()
            .filter(|(_, n)| scrape(n).is_ok_and(|m| m.get("dsrlb_vip_owner", &[]) == 1.0))
            .map(|(i, _)| i)
            .collect()
    }

    /// Waits until exactly one of `nodes` owns the VIP and each of them has every backend of
    /// `farms` up; `procs[k]` runs `nodes[k]`.
    pub fn wait_ready(
        &self,
        procs: &mut [LabProcess],
        nodes: &[usize],
        farms: &[LabFarm],
        limit: Duration,
    ) -> Result<(), LabError> {
        self.wait_ready_with_witnesses(procs, nodes, &[], farms, limit)
    }

    /// [`Lab::wait_ready`] where the nodes in `witnesses` only have to answer (a witness has
    /// no datapath, so no backend is ever up there).
    pub fn wait_ready_with_witnesses(
        &self,
        procs: &mut [LabProcess],
        nodes: &[usize],
        witnesses: &[usize],
        farms: &[LabFarm],
        limit: Duration,
    ) -> Result<(), LabError> {
        let expected: usize = farms.iter().map(|f| f.backends.len()).sum();
        let deadline = Instant::now() + limit;
        loop {
            let mut owners = 0;
            let mut all_up = true;
            for &i in nodes {
                match scrape(&self.nodes()[i]) {
                    Ok(m) => {
                        owners += usize::from(m.get("dsrlb_vip_owner", &[]) == 1.0);
                        all_up &= witnesses.contains(&i)
                            || m.sum("dsrlb_backend_up") as usize == expected;
                    }
                    Err(_) => all_up = false,
                }
            }
            if owners == 1 && all_up {
                return Ok(());
            }
            for (k, p) in procs.iter_mut().enumerate() {
                if let Ok(Some(status)) = p.try_wait() {
                    return Err(LabError::NotReady {
                        name: format!("dsrlb on {}", self.nodes()[nodes[k]].name),
                        waited: Duration::ZERO,
                        detail: format!("exited ({status}): {}", p.log_tail(20)),
                    });
                }
            }
            if Instant::now() > deadline {
                let tails: Vec<String> = procs.iter().map(|p| p.log_tail(8)).collect();
                return Err(LabError::NotReady {
                    name: "dsrlb".into(),
                    waited: limit,
                    detail: format!(
                        "{owners} owner(s), backends up everywhere: {all_up}; logs:\n{}",
                        tails.join("\n---\n")
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads the metrics of the dsrlb node running in `node`.
pub fn scrape(node: &Host) -> Result<Metrics, LabError> {
    let reply = node.try_run(|| {
        http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], METRICS_PORT)),
            "/metrics",
        )
    })??;
    Ok(Metrics::parse(&reply.body))
}

/// Writes a token file readable by its owner only: the node refuses any other
/// (docs/design.md#config).
pub(crate) fn write_private(path: &std::path::Path, token: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(token)
}

/// libfaketime's thread-safe preload library (the node is multi-threaded).
const LIBFAKETIME_NAME: &str = "libfaketimeMT.so.1";

/// Where Debian's `faketime` package put [`LIBFAKETIME_NAME`], if it is installed.
pub fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.filter_map(Result::ok)
        .map(|d| d.path().join("faketime").join(LIBFAKETIME_NAME))
        .chain(std::iter::once(
            PathBuf::from("/usr/lib/faketime").join(LIBFAKETIME_NAME),
        ))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_and_label_matching() {
        let m = Metrics::parse(
            "# HELP x\ndsrlb_vip_owner 1\ndsrlb_packets_total{farm=\"web\",backend=\"b1\"} 42\n\
             dsrlb_packets_total{farm=\"web\",backend=\"b2\"} 8\n",
        );
        assert_eq!(m.get("dsrlb_vip_owner", &[]), 1.0);
        assert_eq!(
            m.get("dsrlb_packets_total", &[("backend", "b1"), ("farm", "web")]),
            42.0
        );
        assert_eq!(m.get("dsrlb_packets_total", &[("farm", "web")]), 0.0);
        assert_eq!(m.sum("dsrlb_packets_total"), 50.0);
        assert_eq!(
            m.by_label("dsrlb_packets_total", "backend"),
            [("b1".to_string(), 42.0), ("b2".to_string(), 8.0)]
        );
        assert!(m.by_label("dsrlb_packets", "backend").is_empty());
        let h = Metrics::parse(
            "lag_bucket{le=\"0.05\"} 3\nlag_bucket{le=\"+Inf\"} 4\nlag_sum 0.2\nlag_count 4\n",
        );
        assert_eq!(
            h.by_label("lag_bucket", "le"),
            [("0.05".to_string(), 3.0), ("+Inf".to_string(), 4.0)]
        );
    }
}
