//! The results of `dsrlb-labbench`: per-round numbers for every path (direct, then each
//! load balancer), their medians and ratios against direct, and the two ways they are
//! printed — a table for people and JSON for scripts.

use std::collections::BTreeMap;
use std::fmt;

use bench::json::Json;

/// docs/design.md#targets: through the VIP ÷ straight to a backend, at least this much.
pub const TARGET_HTTP: f64 = 0.90;
pub const TARGET_UPLOAD: f64 = 0.90;
pub const TARGET_UDP: f64 = 0.80;

/// One path (direct or through one load balancer) of one round.
#[derive(Clone, Debug, Default)]
pub struct Side {
    pub http_ka_rps: f64,
    pub http_p50_us: f64,
    pub http_p99_us: f64,
    pub http_new_rps: f64,
    pub upload_gbps: f64,
    /// Payload delivered to the backend's UDP sink.
    pub udp_gbps: f64,
    /// Payload the client's senders got into their sockets.
    pub udp_sent_gbps: f64,
    /// Failed requests, uploads and sends.
    pub errors: u64,
    /// CPU cores the dsrlb process kept busy during each workload, in [`WORKLOADS`] order
    /// (0 where no dsrlb process forwards: direct, nftlb).
    pub node_cores: [f64; 4],
    /// CPU cores the whole machine kept busy during each workload (client, load balancer,
    /// backend and their softirqs).
    pub machine_cores: [f64; 4],
}

/// The workloads measured on every path, in the order they run.
pub const WORKLOADS: [&str; 4] = ["http_keepalive", "http_newconn", "tcp_upload", "udp_1400"];

/// The 64-byte UDP flood on one path in one round.
#[derive(Clone, Debug, Default)]
pub struct Blast {
    pub seconds: f64,
    pub sent: u64,
    /// Frames the load balancer's eth0 received (what reached it at all).
    pub node_rx: u64,
    /// Frames its eth0 counted as dropped on receive (kernel backlog).
    pub node_rx_dropped: u64,
    /// Frames its eth0 sent (forwarded frames and ARP replies).
    pub node_tx: u64,
    /// Frames forwarded: `dsrlb_packets_total` of the sink farm for dsrlb, eth0 tx for
    /// nftlb, the sink's count for direct.
    pub forwarded: u64,
    /// `dsrlb_drops_total` deltas by reason (only reasons that moved).
    pub drops: BTreeMap<String, u64>,
    /// Datagrams the backend's sink received.
    pub delivered: u64,
    /// CPU of the dsrlb process (0 where none forwards).
    pub node_cpu_s: f64,
    /// CPU of the whole machine, and its softirq part.
    pub machine_cpu_s: f64,
    pub machine_softirq_s: f64,
    /// Voluntary context switches of the dsrlb process's threads (sleeps in `poll`).
    pub node_wakeups: u64,
}

impl Blast {
    pub fn sent_pps(&self) -> f64 {
        per_sec(self.sent, self.seconds)
    }
    pub fn forwarded_pps(&self) -> f64 {
        per_sec(self.forwarded, self.seconds)
    }
    pub fn delivered_pps(&self) -> f64 {
        per_sec(self.delivered, self.seconds)
    }
    /// CPU seconds the dsrlb process spent per million forwarded packets.
    pub fn cpu_per_mpkt(&self) -> f64 {
        per_million(self.node_cpu_s, self.forwarded)
    }
    /// CPU seconds the whole machine spent per million delivered packets (sender, load
    /// balancer, sink): the one cost figure that also covers an in-kernel forwarder.
    pub fn machine_cpu_per_mpkt(&self) -> f64 {
        per_million(self.machine_cpu_s, self.delivered)
    }
    /// Forwarded frames per dsrlb wake-up: how well the workers batch.
    pub fn frames_per_wakeup(&self) -> f64 {
        if self.node_wakeups == 0 {
            return 0.0;
        }
        self.forwarded as f64 / self.node_wakeups as f64
    }
    /// Frames that reached the node but were neither forwarded nor counted as a drop: lost
    /// in the node's receive ring (or not yet processed when the counters were read).
    pub fn unaccounted(&self) -> i64 {
        let dropped: u64 = self.drops.values().sum();
        self.node_rx as i64 - self.forwarded as i64 - dropped as i64
    }
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn per_million(cpu: f64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { cpu / (n as f64 / 1e6) }
}

/// One round: every path's side and flood, and the order the paths ran in.
#[derive(Clone, Debug, Default)]
pub struct Round {
    /// Path indexes in the order they ran (the order rotates round by round).
    pub order: Vec<usize>,
    /// `sides[p]` for path `p` of [`Report::paths`].
    pub sides: Vec<Side>,
    pub blasts: Vec<Blast>,
}

/// What the run was and what it saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub header: Vec<String>,
    /// Path names: `direct` first, then each load balancer (`dsrlb`, `dsrlb-B`, `nftlb`).
    pub paths: Vec<String>,
    pub rounds: Vec<Round>,
    /// The first few error messages, for the reader.
    pub notes: Vec<String>,
    pub wall_s: f64,
}

/// The median of `v` (mean of the middle two for an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// `vip / direct`, or NaN when direct measured nothing.
fn ratio(vip: f64, direct: f64) -> f64 {
    if direct > 0.0 { vip / direct } else { f64::NAN }
}

type Metric = (&'static str, fn(&Side) -> f64);

/// The metrics of a side, by name, in table order.
const SIDE_METRICS: [Metric; 7] = [
    ("http_keepalive_rps", |s| s.http_ka_rps),
    ("http_p50_us", |s| s.http_p50_us),
    ("http_p99_us", |s| s.http_p99_us),
    ("http_newconn_rps", |s| s.http_new_rps),
    ("tcp_upload_gbps", |s| s.upload_gbps),
    ("udp_1400_delivered_gbps", |s| s.udp_gbps),
    ("udp_1400_sent_gbps", |s| s.udp_sent_gbps),
];

type BlastMetric = (&'static str, fn(&Blast) -> f64);

const BLAST_METRICS: [BlastMetric; 4] = [
    ("udp64_delivered_pps", Blast::delivered_pps),
    ("udp64_forwarded_pps", Blast::forwarded_pps),
    ("node_cpu_s_per_million_packets", Blast::cpu_per_mpkt),
    (
        "machine_cpu_s_per_million_delivered",
        Blast::machine_cpu_per_mpkt,
    ),
];

impl Report {
    /// The median over rounds of `f` on path `p`.
    pub fn med(&self, p: usize, f: impl Fn(&Side) -> f64) -> f64 {
        median(
            self.rounds
                .iter()
                .filter_map(|r| r.sides.get(p).map(&f))
                .collect(),
        )
    }

    fn med_blast(&self, p: usize, f: fn(&Blast) -> f64) -> f64 {
        median(
            self.rounds
                .iter()
                .filter_map(|r| r.blasts.get(p).map(f))
                .collect(),
        )
    }

    /// Ratio of path `p`'s median to direct's.
    pub fn ratio(&self, p: usize, f: fn(&Side) -> f64) -> f64 {
        ratio(self.med(p, f), self.med(0, f))
    }

    /// The three ratios docs/design.md#targets sets targets for, for path `p`:
    /// (name, ratio of medians, target).
    pub fn targets(&self, p: usize) -> [(&'static str, f64, f64); 3] {
        [
            (
                "http keep-alive req/s",
                self.ratio(p, |s| s.http_ka_rps),
                TARGET_HTTP,
            ),
            (
                "tcp upload",
                self.ratio(p, |s| s.upload_gbps),
                TARGET_UPLOAD,
            ),
            (
                "udp 1400B delivered",
                self.ratio(p, |s| s.udp_gbps),
                TARGET_UDP,
            ),
        ]
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        for h in &self.header {
            line(&mut t, format_args!("{h}"));
        }
        line(&mut t, format_args!(""));
        let lbs = 1..self.paths.len();
        // One row: the direct value, then per load balancer its value and ratio.
        let row = |t: &mut String, name: &str, cells: Vec<String>| {
            let mut s = format!("{name:<30}");
            for (i, c) in cells.iter().enumerate() {
                let w = if i == 0 || i % 2 == 1 { 13 } else { 7 };
                s.push_str(&format!(" {c:>w$}"));
            }
            line(t, format_args!("{s}"));
        };
        let mut head = vec![self.paths.first().cloned().unwrap_or_default()];
        for p in lbs.clone() {
            head.push(self.paths[p].clone());
            head.push("ratio".into());
        }
        row(&mut t, "workload", head);
        let metric_row =
            |t: &mut String, name: &str, f: fn(&Side) -> f64, fmt: fn(f64) -> String| {
                let mut cells = vec![fmt(self.med(0, f))];
                for p in lbs.clone() {
                    cells.push(fmt(self.med(p, f)));
                    cells.push(f2(self.ratio(p, f)));
                }
                row(t, name, cells);
            };
        metric_row(&mut t, "http keep-alive req/s", |s| s.http_ka_rps, f0);
        let mut cells = vec![format!(
            "{:.0}/{:.0}",
            self.med(0, |s| s.http_p50_us),
            self.med(0, |s| s.http_p99_us)
        )];
        for p in lbs.clone() {
            cells.push(format!(
                "{:.0}/{:.0}",
                self.med(p, |s| s.http_p50_us),
                self.med(p, |s| s.http_p99_us)
            ));
            cells.push(String::new());
        }
        row(&mut t, "http p50 / p99 (µs)", cells);
        let mut cells = vec!["-".to_owned()];
        for p in lbs.clone() {
            cells.push(format!("{:+.0}", self.p99_added_us(p)));
            cells.push(String::new());
        }
        row(&mut t, "http p99 added (µs)", cells);
        metric_row(&mut t, "http new-conn req/s", |s| s.http_new_rps, f0);
        metric_row(&mut t, "tcp upload Gbit/s", |s| s.upload_gbps, f2);
        metric_row(&mut t, "udp 1400B Gbit/s (delivered)", |s| s.udp_gbps, f2);
        metric_row(&mut t, "  (sent by the client)", |s| s.udp_sent_gbps, f2);
        let blast_row = |t: &mut String,
                         name: &str,
                         f: fn(&Blast) -> f64,
                         fmt: fn(f64) -> String,
                         with_ratio: bool| {
            let d = self.med_blast(0, f);
            let mut cells = vec![if with_ratio { fmt(d) } else { "-".into() }];
            for p in lbs.clone() {
                let v = self.med_blast(p, f);
                cells.push(fmt(v));
                cells.push(if with_ratio {
                    f2(ratio(v, d))
                } else {
                    String::new()
                });
            }
            row(t, name, cells);
        };
        blast_row(
            &mut t,
            "udp 64B delivered pps",
            Blast::delivered_pps,
            f0,
            true,
        );
        blast_row(
            &mut t,
            "udp 64B forwarded pps",
            Blast::forwarded_pps,
            f0,
            false,
        );
        blast_row(
            &mut t,
            "dsrlb CPU s per 1M packets",
            Blast::cpu_per_mpkt,
            f3_or_dash,
            false,
        );
        blast_row(
            &mut t,
            "machine CPU s per 1M delivered",
            Blast::machine_cpu_per_mpkt,
            f3,
            true,
        );
        line(&mut t, format_args!(""));
        for p in lbs.clone() {
            for (name, r, target) in self.targets(p) {
                let verdict = if r >= target { "meets" } else { "BELOW" };
                line(
                    &mut t,
                    format_args!(
                        "{}: target {name}: ratio {} {verdict} goal {target:.2}",
                        self.paths[p],
                        f2(r)
                    ),
                );
            }
        }
        line(&mut t, format_args!(""));
        line(
            &mut t,
            format_args!("64-byte flood per round (frame 64 B with FCS: 18-byte UDP payload):"),
        );
        for (i, r) in self.rounds.iter().enumerate() {
            for (p, b) in r.blasts.iter().enumerate() {
                let name = self.paths.get(p).map_or("?", String::as_str);
                line(
                    &mut t,
                    format_args!(
                        "  round {} {name}: client sent {} pps; lb eth0 rx {} (kernel rx drops \
                         {}), forwarded {} = {} pps, eth0 tx {}; sink got {} = {} pps",
                        i + 1,
                        f0(b.sent_pps()),
                        b.node_rx,
                        b.node_rx_dropped,
                        b.forwarded,
                        f0(b.forwarded_pps()),
                        b.node_tx,
                        b.delivered,
                        f0(b.delivered_pps()),
                    ),
                );
                line(
                    &mut t,
                    format_args!(
                        "      dsrlb_drops_total {:?}; unaccounted {}; dsrlb CPU {:.2} s, \
                         {:.1} frames per wake-up; machine CPU {:.2} s (softirq {:.2} s)",
                        b.drops,
                        if p == 0 { 0 } else { b.unaccounted() },
                        b.node_cpu_s,
                        b.frames_per_wakeup(),
                        b.machine_cpu_s,
                        b.machine_softirq_s,
                    ),
                );
            }
        }
        for (p, name) in self.paths.iter().enumerate() {
            let cores = |f: fn(&Side, usize) -> f64| {
                WORKLOADS
                    .iter()
                    .enumerate()
                    .map(|(i, w)| format!("{w} {:.2}", self.med(p, |s| f(s, i))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            line(
                &mut t,
                format_args!(
                    "cores busy, {name}: dsrlb {}; machine {}",
                    cores(|s, i| s.node_cores[i]),
                    cores(|s, i| s.machine_cores[i])
                ),
            );
        }
        let errors: u64 = self
            .rounds
            .iter()
            .flat_map(|r| &r.sides)
            .map(|s| s.errors)
            .sum();
        line(&mut t, format_args!("errors: {errors}"));
        for n in &self.notes {
            line(&mut t, format_args!("  {n}"));
        }
        line(&mut t, format_args!("wall time: {:.1} s", self.wall_s));
        t
    }

    /// Median p99 through path `p` minus median p99 direct, in µs.
    pub fn p99_added_us(&self, p: usize) -> f64 {
        self.med(p, |s| s.http_p99_us) - self.med(0, |s| s.http_p99_us)
    }

    /// The same results as one JSON object (per-round values, medians, ratios).
    pub fn json(&self) -> String {
        let side = |s: &Side| {
            let mut fields: Vec<(String, Json)> = SIDE_METRICS
                .iter()
                .map(|(k, f)| ((*k).to_owned(), Json::Num(f(s))))
                .collect();
            fields.push(("errors".into(), Json::Num(s.errors as f64)));
            let cores = |c: [f64; 4]| {
                Json::Obj(
                    WORKLOADS
                        .iter()
                        .zip(c)
                        .map(|(w, c)| ((*w).to_owned(), Json::Num(c)))
                        .collect(),
                )
            };
            fields.push(("node_cores".into(), cores(s.node_cores)));
            fields.push(("machine_cores".into(), cores(s.machine_cores)));
            Json::Obj(fields)
        };
        let blast = |b: &Blast| {
            Json::obj([
                ("seconds", Json::Num(b.seconds)),
                ("sent", Json::Num(b.sent as f64)),
                ("node_rx", Json::Num(b.node_rx as f64)),
                ("node_rx_dropped", Json::Num(b.node_rx_dropped as f64)),
                ("node_tx", Json::Num(b.node_tx as f64)),
                ("forwarded", Json::Num(b.forwarded as f64)),
                ("delivered", Json::Num(b.delivered as f64)),
                ("unaccounted", Json::Num(b.unaccounted() as f64)),
                ("forwarded_pps", Json::Num(b.forwarded_pps())),
                ("delivered_pps", Json::Num(b.delivered_pps())),
                ("node_cpu_s", Json::Num(b.node_cpu_s)),
                ("machine_cpu_s", Json::Num(b.machine_cpu_s)),
                ("machine_softirq_s", Json::Num(b.machine_softirq_s)),
                ("node_wakeups", Json::Num(b.node_wakeups as f64)),
                ("cpu_s_per_million_packets", Json::Num(b.cpu_per_mpkt())),
                (
                    "machine_cpu_s_per_million_delivered",
                    Json::Num(b.machine_cpu_per_mpkt()),
                ),
                (
                    "drops",
                    Json::Obj(
                        b.drops
                            .iter()
                            .map(|(k, v)| (k.clone(), Json::Num(*v as f64)))
                            .collect(),
                    ),
                ),
            ])
        };
        let rounds = self
            .rounds
            .iter()
            .map(|r| {
                let per_path = |f: &dyn Fn(usize) -> Option<Json>| {
                    Json::Obj(
                        self.paths
                            .iter()
                            .enumerate()
                            .filter_map(|(p, name)| Some((name.clone(), f(p)?)))
                            .collect(),
                    )
                };
                Json::obj([
                    (
                        "order",
                        Json::Arr(
                            r.order
                                .iter()
                                .map(|&p| Json::Str(self.paths[p].clone()))
                                .collect(),
                        ),
                    ),
                    ("sides", per_path(&|p| r.sides.get(p).map(side))),
                    ("udp64", per_path(&|p| r.blasts.get(p).map(blast))),
                ])
            })
            .collect();
        let paths = self
            .paths
            .iter()
            .enumerate()
            .map(|(p, name)| {
                let mut fields: Vec<(String, Json)> = SIDE_METRICS
                    .iter()
                    .map(|(k, f)| ((*k).to_owned(), Json::Num(self.med(p, *f))))
                    .collect();
                fields.extend(
                    BLAST_METRICS
                        .iter()
                        .map(|(k, f)| ((*k).to_owned(), Json::Num(self.med_blast(p, *f)))),
                );
                let mut out = vec![("median".to_owned(), Json::Obj(fields))];
                if p > 0 {
                    let ratios = SIDE_METRICS
                        .iter()
                        .map(|(k, f)| ((*k).to_owned(), Json::Num(self.ratio(p, *f))))
                        .chain(std::iter::once((
                            "udp64_delivered_pps".to_owned(),
                            Json::Num(ratio(
                                self.med_blast(p, Blast::delivered_pps),
                                self.med_blast(0, Blast::delivered_pps),
                            )),
                        )))
                        .collect();
                    out.push(("ratio_to_direct".into(), Json::Obj(ratios)));
                    out.push(("p99_added_us".into(), Json::Num(self.p99_added_us(p))));
                    let targets = self
                        .targets(p)
                        .iter()
                        .map(|(name, r, goal)| {
                            Json::obj([
                                ("name", Json::Str((*name).into())),
                                ("ratio", Json::Num(*r)),
                                ("goal", Json::Num(*goal)),
                                ("met", Json::Bool(*r >= *goal)),
                            ])
                        })
                        .collect();
                    out.push(("targets".into(), Json::Arr(targets)));
                }
                (name.clone(), Json::Obj(out))
            })
            .collect();
        Json::obj([
            (
                "header",
                Json::Arr(self.header.iter().cloned().map(Json::Str).collect()),
            ),
            ("rounds", Json::Arr(rounds)),
            ("paths", Json::Obj(paths)),
            (
                "notes",
                Json::Arr(self.notes.iter().cloned().map(Json::Str).collect()),
            ),
            ("wall_s", Json::Num(self.wall_s)),
        ])
        .to_string()
    }
}

fn line(t: &mut String, args: fmt::Arguments<'_>) {
    t.push_str(&args.to_string());
    t.push('\n');
}

fn f0(x: f64) -> String {
    format!("{x:.0}")
}
fn f2(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "n/a".into()
    }
}
fn f3(x: f64) -> String {
    format!("{x:.3}")
}
/// A cost that is 0 only where nothing was measured (no dsrlb process on that path).
fn f3_or_dash(x: f64) -> String {
    if x > 0.0 { f3(x) } else { "-".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn ratios_are_of_medians_per_path_and_unaccounted_frames_add_up() {
        let side = |rps, p99| Side {
            http_ka_rps: rps,
            http_p99_us: p99,
            ..Side::default()
        };
        let mut report = Report {
            paths: vec!["direct".into(), "dsrlb".into(), "nftlb".into()],
            ..Report::default()
        };
        for (d, v, n) in [
            (100.0, 90.0, 50.0),
            (200.0, 100.0, 60.0),
            (110.0, 99.0, 70.0),
        ] {
            report.rounds.push(Round {
                order: vec![0, 1, 2],
                sides: vec![side(d, 100.0), side(v, 130.0), side(n, 110.0)],
                blasts: Vec::new(),
            });
        }
        let (_, http, _) = report.targets(1)[0];
        assert_eq!(http, 0.9, "median 99 over median 110");
        let (_, http, _) = report.targets(2)[0];
        assert_eq!(http, 60.0 / 110.0);
        assert!(report.targets(1)[1].1.is_nan(), "no upload measured");
        assert_eq!(report.p99_added_us(1), 30.0);
        assert_eq!(report.p99_added_us(2), 10.0);
        assert!(report.json().contains("\"nftlb\""));
        assert!(report.table().contains("nftlb"));

        let b = Blast {
            node_rx: 100,
            forwarded: 90,
            delivered: 80,
            drops: BTreeMap::from([("no_farm".to_owned(), 4)]),
            node_cpu_s: 0.5,
            machine_cpu_s: 1.0,
            seconds: 2.0,
            ..Blast::default()
        };
        assert_eq!(b.unaccounted(), 6);
        assert_eq!(b.forwarded_pps(), 45.0);
        assert!((b.cpu_per_mpkt() - 0.5 / 90e-6).abs() < 1e-6);
        assert!((b.machine_cpu_per_mpkt() - 1.0 / 80e-6).abs() < 1e-6);
    }
}
