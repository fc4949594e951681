//! nftlb (ZEVENET's nftables load balancer) as a DSR director in a lab host, the anchor
//! `dsrlb-labbench --nftlb` measures dsrlb against.
//!
//! nftlb runs in an [`Role::OtherLb`](crate::Role) host: the daemon listens for its REST API
//! on the host's loopback only, a farm per [`LabFarm`] is posted with `mode = dsr` and each
//! backend's `ether-addr` (the lab's fixed MACs), and nftlb turns them into a `netdev`
//! ingress chain on `eth0` that rewrites the destination MAC and `fwd`s the frame back out
//! — in the kernel, with no user-space hop. The VIP is held on the host's `eth0` so its
//! kernel answers ARP for it, which is how a DSR director is set up with nftlb.
//!
//! Only one load balancer may answer for the VIP on the segment: the lab builds these hosts
//! with their cable pulled, and the caller plugs one load balancer in at a time
//! ([`Lab::set_cable`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Host, Lab, LabError, LabFarm, LabProcess};

/// Where nftlb's REST API listens inside its host (loopback only).
pub const NFTLB_API_PORT: u16 = 5555;
const API_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nftlb` binary on this machine (`$PATH`, then `/usr/sbin`), if it is installed.
pub fn find_nftlb() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nftlb"))
        .find(|p| p.is_file())
}

/// A running nftlb with the lab's farms configured. Dropping it stops nftlb; the
/// namespace's removal takes its nftables table with it.
#[derive(Debug)]
pub struct Nftlb {
    host: Host,
    key: String,
    process: LabProcess,
}

impl Nftlb {
    /// Starts `program` (an nftlb binary) in `host`, puts the VIP on its `eth0` and
    /// configures one DSR farm per `farms` entry (backends by lab index, `ether-addr` set
    /// to the backend's MAC; scheduler `hash` over source address and port, like dsrlb's
    /// per-flow choice). Returns once nftlb accepted every farm.
    pub fn start(
        lab: &Lab,
        host: &Host,
        program: &Path,
        farms: &[LabFarm],
    ) -> Result<Nftlb, LabError> {
        let vip = lab.vip();
        host.ip(&["addr", "add", &format!("{vip}/32"), "dev", &host.ifname])?;
        // A per-run key: nftlb refuses API calls without it.
        let key = format!("lab-{}-{}", lab.prefix(), std::process::id());
        let port = NFTLB_API_PORT.to_string();
        let process = host.spawn(
            program,
            [
                "-k",
                &key,
                "-H",
                "127.0.0.1",
                "-P",
                &port,
                "-L",
                "2",
                "-l",
                "4",
            ],
        )?;
        let mut nft = Nftlb {
            host: host.clone(),
            key,
            process,
        };
        nft.wait_api()?;
        let body = farms_json(lab, host, farms)?;
        let reply = nft.request("POST", "/farms", &body)?;
        if !reply.contains("success") {
            return Err(LabError::Spec(format!(
                "nftlb refused the farms: {}",
                reply.trim()
            )));
        }
        Ok(nft)
    }

    /// The host nftlb runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The nftlb process (its pid, its log).
    pub fn process(&self) -> &LabProcess {
        &self.process
    }

    /// `GET /farms`: nftlb's view of its configuration, as JSON text.
    pub fn farms(&self) -> Result<String, LabError> {
        self.request("GET", "/farms", "")
    }

    fn wait_api(&mut self) -> Result<(), LabError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.farms() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(LabError::NotReady {
                        name: "nftlb".into(),
                        waited: START_TIMEOUT,
                        detail: format!("{e}; log: {}", self.process.log_tail(10)),
                    });
                }
                Err(_) => {}
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                return Err(LabError::NotReady {
                    name: "nftlb".into(),
                    waited: Duration::ZERO,
                    detail: format!("exited ({status}): {}", self.process.log_tail(10)),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One HTTP/1.0 request to the API with the key header; returns the body.
    fn request(&self, method: &str, path: &str, body: &str) -> Result<String, LabError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], NFTLB_API_PORT));
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nKey: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.key,
            body.len()
        );
        let what = format!("nftlb API {method} {path}");
        let text = self
            .host
            .try_run(|| -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&addr, API_TIMEOUT)?;
                s.set_read_timeout(Some(API_TIMEOUT))?;
                s.set_write_timeout(Some(API_TIMEOUT))?;
                s.write_all(request.as_bytes())?;
                let mut out = Vec::new();
                // nftlb closes the connection after its answer; bounded by the timeout.
                match s.take(1 << 20).read_to_end(&mut out) {
                    Ok(_) => {}
                    Err(e) if out.is_empty() => return Err(e),
                    Err(_) => {}
                }
                Ok(String::from_utf8_lossy(&out).into_owned())
            })?
            .map_err(|e| LabError::io(what.clone(), e))?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if !status.starts_with('2') {
            return Err(LabError::Spec(format!(
                "{what} answered {:?}: {}",
                head.lines().next().unwrap_or(""),
                body.trim()
            )));
        }
        Ok(body.to_owned())
    }
}

/// nftlb's configuration for `farms`, as the JSON its `POST /farms` takes. Written by
/// hand because nftlb reads keys in document order — a farm's `name` must come before its
/// `backends` — while serde_json's maps sort their keys. Every value is a lab-made name,
/// address or number, so nothing needs escaping.
fn farms_json(lab: &Lab, host: &Host, farms: &[LabFarm]) -> Result<String, LabError> {
    let mut out = Vec::with_capacity(farms.len());
    for f in farms {
        let mut backends = Vec::with_capacity(f.backends.len());
        for &(i, weight) in &f.backends {
            let b = lab
                .backends()
                .get(i)
                .ok_or_else(|| LabError::Spec(format!("farm {}: no backend {i}", f.name)))?;
            backends.push(format!(
                r#"{{"name": "{}", "ip-addr": "{}", "ether-addr": "{}", "weight": "{weight}", "state": "up"}}"#,
                b.name, b.ip, b.mac
            ));
        }
        out.push(format!(
            r#"{{"name": "{}", "family": "ipv4", "virtual-addr": "{}", "virtual-ports": "{}", "mode": "dsr", "protocol": "{}", "scheduler": "hash", "sched-param": "srcip srcport", "iface": "{if}", "oface": "{if}", "ether-addr": "{}", "state": "up", "backends": [{}]}}"#,
            f.name,
            lab.vip(),
            f.port,
            f.protocol,
            host.mac,
            backends.join(", "),
            if = host.ifname,
        ));
    }
    Ok(format!(r#"{{"farms": [{}]}}"#, out.join(", ")))
}
