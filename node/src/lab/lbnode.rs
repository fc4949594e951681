//! dsrlb nodes in the lab: writing a node's config from a farm description, starting
//! `dsrlb run` in a node host, waiting until it owns the VIP with every backend resolved,
//! and reading its Prometheus metrics — what tests, benchmarks and the demo all need.

use std::fmt::Write as _;
use std::path::Path;
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
        }
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

impl Lab {
    /// The config of node `i` (a cluster of one) serving `farms`, with fast checks and
    /// metrics on [`METRICS_PORT`].
    pub fn node_config(&self, i: usize, farms: &[LabFarm]) -> Result<String, LabError> {
        let node = self
            .nodes()
            .get(i)
            .ok_or_else(|| LabError::Spec(format!("no node {i}")))?;
        let mut c = String::new();
        let data_dir = self.dir().join(format!("{}-data", node.name));
        // Writing into a String cannot fail.
        let _ = write!(
            c,
            "[node]\nid = {}\ndata_dir = {:?}\n\n[datapath]\ninterface = {:?}\nworkers = 2\n\n\
             [metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n",
            i + 1,
            data_dir.display().to_string(),
            node.ifname
        );
        for farm in farms {
            let _ = write!(
                c,
                "\n[[farm]]\nname = {:?}\nvip = \"{}\"\nport = {}\nprotocol = {:?}\n",
                farm.name,
                self.vip(),
                farm.port,
                farm.protocol
            );
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
                let _ = write!(
                    c,
                    "\n[[farm.backend]]\nname = {:?}\nip = \"{}\"\nweight = {weight}\n",
                    host.name, host.ip
                );
            }
        }
        Ok(c)
    }

    /// Writes node `i`'s config and starts `dsrlb run` in its host; waits until it owns the
    /// VIP and every configured backend is up (MAC learned, checks passing).
    pub fn start_node(
        &self,
        i: usize,
        dsrlb: &Path,
        farms: &[LabFarm],
    ) -> Result<LabProcess, LabError> {
        let node = self.nodes()[i].clone();
        let path = self.dir().join(format!("{}.toml", node.name));
        let text = self.node_config(i, farms)?;
        std::fs::write(&path, text).map_err(|source| LabError::File {
            what: "write node config",
            path: path.clone(),
            source,
        })?;
        let mut proc = node.spawn_with_env(
            dsrlb,
            ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
            [("RUST_LOG", "info")],
        )?;
        let expected: usize = farms.iter().map(|f| f.backends.len()).sum();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(m) = scrape(&node)
                && m.get("dsrlb_vip_owner", &[]) == 1.0
                && m.sum("dsrlb_backend_up") as usize == expected
            {
                return Ok(proc);
            }
            if let Ok(Some(status)) = proc.try_wait() {
                return Err(LabError::NotReady {
                    name: format!("dsrlb on {}", node.name),
                    waited: Duration::ZERO,
                    detail: format!("exited ({status}): {}", proc.log_tail(20)),
                });
            }
            if Instant::now() > deadline {
                return Err(LabError::NotReady {
                    name: format!("dsrlb on {}", node.name),
                    waited: Duration::from_secs(15),
                    detail: format!(
                        "not owning the VIP with {expected} backends up: {}",
                        proc.log_tail(20)
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
    }
}
