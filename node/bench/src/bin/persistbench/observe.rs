//! What `dsrlb-persistbench` reads from the nodes: the persistence and drop counters of a
//! node's metrics endpoint, the lag histogram (as bucket counts, so two readings subtract),
//! and from /proc a node process's resident memory and CPU time per thread.

use std::collections::BTreeMap;

use anyhow::Context;
use lab::{Host, Metrics, scrape};

/// One reading of a node's metrics, reduced to what the benchmark uses.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// `dsrlb_persistence_entries`, summed over farms.
    pub entries: f64,
    /// `dsrlb_persistence_applied_total{outcome="created"}`.
    pub created: f64,
    pub requests_new: f64,
    pub drops_new: f64,
    pub drops_refresh: f64,
    pub batches: f64,
    pub batch_writes: f64,
    pub batch_failures: f64,
    pub evicted_full: f64,
    /// `dsrlb_drops_total{reason="ring_full"}`.
    pub ring_full: f64,
    /// `dsrlb_drops_total` by reason (ring_full included).
    pub drops: Vec<(String, f64)>,
    /// `dsrlb_persistence_lag_seconds_bucket`: (upper bound in seconds, cumulative count).
    pub lag: Vec<(f64, f64)>,
}

impl Reading {
    pub fn of(m: &Metrics) -> Reading {
        let lag = m
            .by_label("dsrlb_persistence_lag_seconds_bucket", "le")
            .into_iter()
            .filter_map(|(le, n)| {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, n))
            })
            .collect();
        Reading {
            entries: m.sum("dsrlb_persistence_entries"),
            created: m.get("dsrlb_persistence_applied_total", &[("outcome", "created")]),
            requests_new: m.get("dsrlb_persistence_requests_total", &[("kind", "new")]),
            drops_new: m.get("dsrlb_persistence_request_drops_total", &[("kind", "new")]),
            drops_refresh: m.get(
                "dsrlb_persistence_request_drops_total",
                &[("kind", "refresh")],
            ),
            batches: m.get("dsrlb_persistence_batches_total", &[]),
            batch_writes: m.get("dsrlb_persistence_batch_writes_total", &[]),
            batch_failures: m.get("dsrlb_persistence_batch_failures_total", &[]),
            evicted_full: m.get(
                "dsrlb_persistence_applied_total",
                &[("outcome", "evicted_full")],
            ),
            ring_full: m.get("dsrlb_drops_total", &[("reason", "ring_full")]),
            drops: m.by_label("dsrlb_drops_total", "reason"),
            lag,
        }
    }

    /// Reads `node`'s metrics.
    pub fn scrape(node: &Host) -> anyhow::Result<Reading> {
        let m = scrape(node).with_context(|| format!("scraping the metrics of {}", node.name))?;
        Ok(Reading::of(&m))
    }
}

/// The lag histogram between two readings: (upper bound, observations in that bucket and
/// below), from cumulative bucket counts.
pub fn lag_delta(before: &Reading, after: &Reading) -> Vec<(f64, f64)> {
    after
        .lag
        .iter()
        .map(|&(le, n)| {
            let old = before
                .lag
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, n)| *n);
            (le, (n - old).max(0.0))
        })
        .collect()
}

/// The upper bound of the bucket that holds quantile `q` of a cumulative histogram (as
/// Prometheus would report "≤ bound"); `None` without observations.
pub fn bucket_quantile(cumulative: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = cumulative.iter().map(|(_, n)| *n).fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    let want = (q * total).ceil().max(1.0);
    cumulative
        .iter()
        .find(|(_, n)| *n >= want)
        .map(|(le, _)| *le)
}

/// Observations in a cumulative histogram (its largest count, the `+Inf` bucket).
pub fn observations(cumulative: &[(f64, f64)]) -> f64 {
    cumulative.iter().map(|(_, n)| *n).fold(0.0, f64::max)
}

/// Received and receive-dropped packets of `ifname` in the calling thread's namespace.
pub fn rx_counters(ifname: &str) -> anyhow::Result<(u64, u64)> {
    let path = "/proc/thread-self/net/dev";
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    parse_net_dev(&text, ifname).with_context(|| format!("no line for {ifname} in {path}"))
}

fn parse_net_dev(text: &str, ifname: &str) -> Option<(u64, u64)> {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(ifname)?.strip_prefix(':'))?;
    let mut f = line.split_whitespace().map(str::parse::<u64>);
    // rx bytes, packets, errs, drop
    let packets = f.nth(1)?.ok()?;
    let dropped = f.nth(1)?.ok()?;
    Some((packets, dropped))
}

/// Transmitted and transmit-dropped packets of `port` in namespace `netns` (`ip -s -j`):
/// the switch's port towards a host, whose drops are frames the host's receive backlog
/// refused, counted nowhere inside the host.
pub fn tx_counters(netns: &str, port: &str) -> anyhow::Result<(u64, u64)> {
    let out = std::process::Command::new("ip")
        .args(["-s", "-j", "-n", netns, "link", "show", "dev", port])
        .output()
        .context("running ip -s -j link show")?;
    anyhow::ensure!(
        out.status.success(),
        "ip -n {netns} link show dev {port}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing ip -j output")?;
    let tx = &v[0]["stats64"]["tx"];
    let field = |k: &str| {
        tx[k]
            .as_u64()
            .with_context(|| format!("no stats64.tx.{k} for {port} in {netns}"))
    };
    Ok((field("packets")?, field("dropped")?))
}

/// `VmRSS` of process `pid`, bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kb * 1024)
}

/// CPU seconds (user + system) of each thread of process `pid`, summed by thread name:
/// the node names its workers (`dsrlb-w<i>`), its ARP resolver and its control runtime.
pub fn thread_cpu(pid: u32) -> anyhow::Result<BTreeMap<String, f64>> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(_SC_CLK_TCK)")?
        .filter(|&hz| hz > 0)
        .context("sysconf(_SC_CLK_TCK) has no value")? as f64;
    let dir = format!("/proc/{pid}/task");
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir(&dir).with_context(|| format!("list {dir}"))? {
        let path = task
            .with_context(|| format!("list {dir}"))?
            .path()
            .join("stat");
        // A thread may exit between the listing and the read; it no longer counts.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Some((name, ticks)) = parse_stat(&text) {
            *by_name.entry(name).or_insert(0.0) += ticks as f64 / hz;
        }
    }
    Ok(by_name)
}

/// (comm, utime + stime) of a `/proc/*/stat` line; the name may hold spaces and parens.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    // After ")": state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU cores each thread name used between two [`thread_cpu`] readings `seconds` apart,
/// busiest first.
pub fn cores_by_thread(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    seconds: f64,
) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(name, t)| {
            let t0 = before.get(name).copied().unwrap_or(0.0);
            (name.clone(), (t - t0).max(0.0) / seconds.max(1e-3))
        })
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_name_the_bucket_bound() {
        let before = Reading {
            lag: vec![(0.05, 10.0), (0.1, 10.0), (f64::INFINITY, 10.0)],
            ..Reading::default()
        };
        let after = Reading {
            lag: vec![(0.05, 60.0), (0.1, 108.0), (f64::INFINITY, 110.0)],
            ..Reading::default()
        };
        let d = lag_delta(&before, &after);
        assert_eq!(observations(&d), 100.0);
        assert_eq!(bucket_quantile(&d, 0.5), Some(0.05));
        assert_eq!(bucket_quantile(&d, 0.51), Some(0.1));
        assert_eq!(bucket_quantile(&d, 0.99), Some(f64::INFINITY));
        assert_eq!(bucket_quantile(&lag_delta(&after, &after), 0.5), None);
    }

    #[test]
    fn net_dev_lines() {
        let text = "Inter-|   Receive\n face |bytes packets errs drop\n\
                    \x20 eth0: 6000 100 0 7 0 0 0 0 900 9 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text, "eth0"), Some((100, 7)));
        assert_eq!(parse_net_dev(text, "eth1"), None);
    }

    #[test]
    fn stat_lines_with_odd_thread_names() {
        let line = "42 (dsrlb (w) 1) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_stat(line), Some(("dsrlb (w) 1".into(), 300)));
        let m = Metrics::parse(
            "dsrlb_persistence_entries{farm=\"p1\"} 5\ndsrlb_persistence_entries{farm=\"p2\"} 7\n\
             dsrlb_persistence_lag_seconds_bucket{le=\"0.05\"} 3\n\
             dsrlb_persistence_lag_seconds_bucket{le=\"+Inf\"} 4\n",
        );
        let r = Reading::of(&m);
        assert_eq!(r.entries, 12.0);
        assert_eq!(r.lag, [(0.05, 3.0), (f64::INFINITY, 4.0)]);
    }
}
