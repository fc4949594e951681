//! The results of `dsrlb-labbench`: per-round numbers, their medians and ratios, and the
//! two ways they are printed — a table for people and JSON for scripts.

use std::collections::BTreeMap;
use std::fmt;

use bench::json::Json;

/// docs/design.md#targets: through the VIP ÷ straight to a backend, at least this much.
pub const TARGET_HTTP: f64 = 0.90;
pub const TARGET_UPLOAD: f64 = 0.90;
pub const TARGET_UDP: f64 = 0.80;

/// One side (direct or via the VIP) of one round.
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
    /// CPU cores the node process kept busy during each workload, in [`WORKLOADS`] order.
    pub node_cores: [f64; 4],
}

/// The workloads measured on both paths, in the order they run.
pub const WORKLOADS: [&str; 4] = ["http_keepalive", "http_newconn", "tcp_upload", "udp_1400"];

/// The 64-byte UDP flood through the VIP in one round.
#[derive(Clone, Debug, Default)]
pub struct Blast {
    pub seconds: f64,
    pub sent: u64,
    /// Frames the node's eth0 received (what reached the node at all).
    pub node_rx: u64,
    /// Frames the node's eth0 counted as dropped on receive (kernel backlog).
    pub node_rx_dropped: u64,
    /// Frames the node's eth0 sent (forwarded frames and ARP replies).
    pub node_tx: u64,
    /// `dsrlb_packets_total` delta for the sink farm.
    pub forwarded: u64,
    /// `dsrlb_drops_total` deltas by reason (only reasons that moved).
    pub drops: BTreeMap<String, u64>,
    /// Datagrams the backend's sink received.
    pub delivered: u64,
    pub node_cpu_s: f64,
    /// Voluntary context switches of the node's threads (sleeps in `poll`).
    pub node_wakeups: u64,
}

impl Blast {
    pub fn sent_pps(&self) -> f64 {
        per_sec(self.sent, self.seconds)
    }
    pub fn forwarded_pps(&self) -> f64 {
        per_sec(self.forwarded, self.seconds)
    }
    /// CPU seconds the node spent per million forwarded packets.
    pub fn cpu_per_mpkt(&self) -> f64 {
        if self.forwarded == 0 {
            return 0.0;
        }
        self.node_cpu_s / (self.forwarded as f64 / 1e6)
    }
    /// Forwarded frames per node wake-up: how well the workers batch.
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

/// One round: both sides, in the order they ran, and the flood.
#[derive(Clone, Debug, Default)]
pub struct Round {
    pub vip_first: bool,
    pub direct: Side,
    pub vip: Side,
    pub blast: Blast,
}

/// What the run was and what it saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub header: Vec<String>,
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

impl Report {
    fn med(&self, vip: bool, f: impl Fn(&Side) -> f64) -> f64 {
        median(
            self.rounds
                .iter()
                .map(|r| f(if vip { &r.vip } else { &r.direct }))
                .collect(),
        )
    }

    fn med_blast(&self, f: fn(&Blast) -> f64) -> f64 {
        median(self.rounds.iter().map(|r| f(&r.blast)).collect())
    }

    /// The three ratios docs/design.md#targets sets targets for: (name, ratio of medians, target).
    pub fn targets(&self) -> [(&'static str, f64, f64); 3] {
        let r = |f: fn(&Side) -> f64| ratio(self.med(true, f), self.med(false, f));
        [
            ("http keep-alive req/s", r(|s| s.http_ka_rps), TARGET_HTTP),
            ("tcp upload", r(|s| s.upload_gbps), TARGET_UPLOAD),
            ("udp 1400B delivered", r(|s| s.udp_gbps), TARGET_UDP),
        ]
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        for h in &self.header {
            line(&mut t, format_args!("{h}"));
        }
        line(&mut t, format_args!(""));
        let row = |t: &mut String, name: &str, d: String, v: String, r: String| {
            line(t, format_args!("{name:<30} {d:>14} {v:>14} {r:>8}"))
        };
        let both = |f: fn(&Side) -> f64| (self.med(false, f), self.med(true, f));
        row(
            &mut t,
            "workload",
            "direct".into(),
            "via VIP".into(),
            "ratio".into(),
        );
        let (d, v) = both(|s| s.http_ka_rps);
        row(
            &mut t,
            "http keep-alive req/s",
            f0(d),
            f0(v),
            f2(ratio(v, d)),
        );
        let (d50, v50) = both(|s| s.http_p50_us);
        let (d99, v99) = both(|s| s.http_p99_us);
        row(
            &mut t,
            "http p50 / p99 (µs)",
            format!("{d50:.0}/{d99:.0}"),
            format!("{v50:.0}/{v99:.0}"),
            String::new(),
        );
        let (d, v) = both(|s| s.http_new_rps);
        row(&mut t, "http new-conn req/s", f0(d), f0(v), f2(ratio(v, d)));
        let (d, v) = both(|s| s.upload_gbps);
        row(&mut t, "tcp upload Gbit/s", f2(d), f2(v), f2(ratio(v, d)));
        let (d, v) = both(|s| s.udp_gbps);
        row(
            &mut t,
            "udp 1400B Gbit/s (delivered)",
            f2(d),
            f2(v),
            f2(ratio(v, d)),
        );
        let (ds, vs) = both(|s| s.udp_sent_gbps);
        row(
            &mut t,
            "  (sent by the client)",
            f2(ds),
            f2(vs),
            String::new(),
        );
        let pps = self.med_blast(Blast::forwarded_pps);
        row(
            &mut t,
            "udp 64B forwarded pps",
            "-".into(),
            f0(pps),
            String::new(),
        );
        let cpu = self.med_blast(Blast::cpu_per_mpkt);
        row(
            &mut t,
            "node CPU s per 1M packets",
            "-".into(),
            f3(cpu),
            String::new(),
        );
        line(&mut t, format_args!(""));
        for (name, r, target) in self.targets() {
            let verdict = if r >= target { "meets" } else { "BELOW" };
            line(
                &mut t,
                format_args!("target {name}: ratio {} {verdict} goal {target:.2}", f2(r)),
            );
        }
        line(&mut t, format_args!(""));
        line(
            &mut t,
            format_args!("64-byte flood per round (frame 64 B with FCS: 18-byte UDP payload):"),
        );
        for (i, r) in self.rounds.iter().enumerate() {
            let b = &r.blast;
            let cores = if b.seconds > 0.0 {
                b.node_cpu_s / b.seconds
            } else {
                0.0
            };
            line(
                &mut t,
                format_args!(
                    "  round {}: client sent {} pps; node eth0 rx {} (kernel rx drops {}), \
                     forwarded {} = {} pps, eth0 tx {}; sink got {}",
                    i + 1,
                    f0(b.sent_pps()),
                    b.node_rx,
                    b.node_rx_dropped,
                    b.forwarded,
                    f0(b.forwarded_pps()),
                    b.node_tx,
                    b.delivered,
                ),
            );
            line(
                &mut t,
                format_args!(
                    "           dsrlb_drops_total {:?}; unaccounted (neither forwarded nor \
                     counted) {}; node CPU {:.2} s = {:.2} cores, {:.1} frames per wake-up",
                    b.drops,
                    b.unaccounted(),
                    b.node_cpu_s,
                    cores,
                    b.frames_per_wakeup(),
                ),
            );
        }
        let cores = |vip: bool| {
            WORKLOADS
                .iter()
                .enumerate()
                .map(|(i, w)| format!("{w} {:.2}", self.med(vip, |s| s.node_cores[i])))
                .collect::<Vec<_>>()
                .join(", ")
        };
        line(
            &mut t,
            format_args!("node CPU, cores busy, via VIP: {}", cores(true)),
        );
        line(
            &mut t,
            format_args!("  (and while traffic went direct: {})", cores(false)),
        );
        let errors: u64 = self
            .rounds
            .iter()
            .map(|r| r.direct.errors + r.vip.errors)
            .sum();
        line(&mut t, format_args!("errors: {errors}"));
        for n in &self.notes {
            line(&mut t, format_args!("  {n}"));
        }
        line(&mut t, format_args!("wall time: {:.1} s", self.wall_s));
        t
    }

    /// The same results as one JSON object (per-round values, medians, ratios).
    pub fn json(&self) -> String {
        let side = |s: &Side| {
            let mut fields: Vec<(String, Json)> = SIDE_METRICS
                .iter()
                .map(|(k, f)| ((*k).to_owned(), Json::Num(f(s))))
                .collect();
            fields.push(("errors".into(), Json::Num(s.errors as f64)));
            let cores = WORKLOADS
                .iter()
                .zip(s.node_cores)
                .map(|(w, c)| ((*w).to_owned(), Json::Num(c)))
                .collect();
            fields.push(("node_cores".into(), Json::Obj(cores)));
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
                ("node_cpu_s", Json::Num(b.node_cpu_s)),
                ("node_wakeups", Json::Num(b.node_wakeups as f64)),
                ("cpu_s_per_million_packets", Json::Num(b.cpu_per_mpkt())),
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
                Json::obj([
                    ("vip_first", Json::Bool(r.vip_first)),
                    ("direct", side(&r.direct)),
                    ("vip", side(&r.vip)),
                    ("udp64", blast(&r.blast)),
                ])
            })
            .collect();
        let medians = |vip: bool| {
            Json::Obj(
                SIDE_METRICS
                    .iter()
                    .map(|(k, f)| ((*k).to_owned(), Json::Num(self.med(vip, *f))))
                    .collect(),
            )
        };
        let ratios = Json::Obj(
            SIDE_METRICS
                .iter()
                .map(|(k, f)| {
                    let r = ratio(self.med(true, *f), self.med(false, *f));
                    ((*k).to_owned(), Json::Num(r))
                })
                .collect(),
        );
        let targets = self
            .targets()
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
        Json::obj([
            (
                "header",
                Json::Arr(self.header.iter().cloned().map(Json::Str).collect()),
            ),
            ("rounds", Json::Arr(rounds)),
            ("median_direct", medians(false)),
            ("median_vip", medians(true)),
            ("ratio_of_medians", ratios),
            (
                "udp64_forwarded_pps_median",
                Json::Num(self.med_blast(Blast::forwarded_pps)),
            ),
            (
                "node_cpu_s_per_million_packets_median",
                Json::Num(self.med_blast(Blast::cpu_per_mpkt)),
            ),
            ("targets", Json::Arr(targets)),
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
    fn ratios_are_of_medians_and_unaccounted_frames_add_up() {
        let side = |rps| Side {
            http_ka_rps: rps,
            ..Side::default()
        };
        let mut report = Report::default();
        for (d, v) in [(100.0, 90.0), (200.0, 100.0), (110.0, 99.0)] {
            report.rounds.push(Round {
                direct: side(d),
                vip: side(v),
                ..Round::default()
            });
        }
        let (_, http, _) = report.targets()[0];
        assert_eq!(http, 0.9, "median 99 over median 110");
        assert!(report.targets()[1].1.is_nan(), "no upload measured");

        let b = Blast {
            node_rx: 100,
            forwarded: 90,
            drops: BTreeMap::from([("no_farm".to_owned(), 4)]),
            node_cpu_s: 0.5,
            seconds: 2.0,
            ..Blast::default()
        };
        assert_eq!(b.unaccounted(), 6);
        assert_eq!(b.forwarded_pps(), 45.0);
        assert!((b.cpu_per_mpkt() - 0.5 / 90e-6).abs() < 1e-6);
    }
}
