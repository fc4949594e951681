//! A loop of admin writes, each adding one uniquely named backend to a "ledger" farm (a farm
//! no traffic uses: its backends are `off` with pinned MACs), so the final state says exactly
//! which writes landed. Every write's outcome is recorded: acknowledged, refused, or unknown
//! (timed out, connection lost, node unavailable — it may or may not have been applied).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dsrctl::CtlError;
use dsrctl::client::Client;
use lab::LabFarm;
use proto::admin::v1 as pb;
use tonic::Code;

/// Ledger farms, each on its own VIP port (no traffic goes there).
pub const LEDGER_FARMS: usize = 3;
/// Backends per ledger farm: addresses 198.18.0.101–.250 (above the VIP, on the lab's /24,
/// distinct within a farm as validation requires).
pub const LEDGER_SLOTS: usize = 150;
/// The first ledger farm's port.
const LEDGER_PORT: u16 = 9100;
/// How long one write may take before it counts as unknown.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two writes.
const PACE: Duration = Duration::from_millis(40);

/// The ledger farms, for the nodes' configs (empty: the writes fill them).
pub fn ledger_farms() -> Vec<LabFarm> {
    (0..LEDGER_FARMS)
        .map(|k| LabFarm::new(&ledger_name(k), "tcp", LEDGER_PORT + k as u16, &[]))
        .collect()
}

/// The name of ledger farm `k`.
pub fn ledger_name(k: usize) -> String {
    format!("ledger{k}")
}

/// Write `i`: the farm it goes to and the backend it adds.
pub fn ledger_entry(i: usize) -> (String, pb::Backend) {
    let slot = i % LEDGER_SLOTS;
    let ip = Ipv4Addr::new(198, 18, 0, 101 + slot as u8);
    let backend = pb::Backend {
        name: format!("w{i}"),
        ip: ip.to_string(),
        mac: format!("02:cc:00:00:{:02x}:{:02x}", i >> 8, i & 0xff),
        weight: 1,
        state: "off".into(),
        ..Default::default()
    };
    (ledger_name(i / LEDGER_SLOTS), backend)
}

/// What became of one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The cluster said it was applied (or, on a retry inside the client, that it exists).
    Acked,
    /// The cluster refused it: it changed nothing.
    Refused(String),
    /// No answer that says either way.
    Unknown(String),
}

/// One write and its outcome.
#[derive(Clone, Debug)]
pub struct WriteOp {
    pub farm: String,
    pub name: String,
    pub sent: Instant,
    pub done: Instant,
    pub outcome: WriteOutcome,
}

/// Every write of a run, in order.
#[derive(Clone, Debug, Default)]
pub struct WriteHistory {
    pub ops: Vec<WriteOp>,
}

impl WriteHistory {
    pub fn count(&self, f: impl Fn(&WriteOutcome) -> bool) -> usize {
        self.ops.iter().filter(|o| f(&o.outcome)).count()
    }
    pub fn acked(&self) -> usize {
        self.count(|o| *o == WriteOutcome::Acked)
    }
    pub fn unknown(&self) -> usize {
        self.count(|o| matches!(o, WriteOutcome::Unknown(_)))
    }
}

/// Judges a client answer. ALREADY_EXISTS can only come from an earlier attempt of the
/// same call (every name is used once), which therefore was applied.
pub fn judge(result: &Result<(), CtlError>) -> WriteOutcome {
    match result {
        Ok(()) => WriteOutcome::Acked,
        Err(CtlError::Rpc { code, .. }) if *code == Code::AlreadyExists => WriteOutcome::Acked,
        Err(
            e @ CtlError::Rpc {
                code: Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition,
                ..
            },
        ) => WriteOutcome::Refused(e.to_string()),
        Err(e) => WriteOutcome::Unknown(e.to_string()),
    }
}

/// Writes until `stop`, `deadline` or a full ledger, one at a time through `client` (call it
/// inside the client host).
pub fn run(mut client: Client, stop: &AtomicBool, deadline: Instant) -> WriteHistory {
    let mut history = WriteHistory::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let now = Instant::now();
            history.ops.push(WriteOp {
                farm: String::new(),
                name: String::new(),
                sent: now,
                done: now,
                outcome: WriteOutcome::Refused(format!("no tokio runtime: {e}")),
            });
            return history;
        }
    };
    for i in 0..LEDGER_FARMS * LEDGER_SLOTS {
        if stop.load(Ordering::Relaxed) || Instant::now() + WRITE_TIMEOUT >= deadline {
            break;
        }
        let (farm, backend) = ledger_entry(i);
        let name = backend.name.clone();
        let req = pb::AddBackendRequest {
            farm: farm.clone(),
            backend: Some(backend),
        };
        let sent = Instant::now();
        let result = rt.block_on(async {
            client
                .call(async |mut api| api.add_backend(req.clone()).await)
                .await
                .map(drop)
        });
        history.ops.push(WriteOp {
            farm,
            name,
            sent,
            done: Instant::now(),
            outcome: judge(&result),
        });
        if !super::pause(PACE, stop, deadline) {
            break;
        }
    }
    history
}
