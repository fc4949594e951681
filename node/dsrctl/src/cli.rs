//! The `dsrctl` command line (clap derive): global options, verbs and their arguments, and
//! the value parsers that turn a malformed argument into a usage error (exit 3) before any
//! call is made.

use super::parse::{
    parse_duration_text, parse_endpoint, parse_interval, parse_mac, parse_port_range,
};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use proto::admin::{PERSISTENCE_LIST_DEFAULT, PERSISTENCE_LIST_MAX};
use proto::names::{BackendState, Protocol};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The admin port's default endpoint (docs/design.md#ports).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7101";

const LONG_ABOUT: &str = "\
dsrctl — operate a dsrlb cluster: status, farms, backends, apply/export, persistence, stats,
membership.

dsrctl operates a running dsrlb cluster through its admin API (dsrlb.admin.v1, gRPC on \
the admin port, 7101 by default). Every node serves the API: reads are answered by the node \
you reach (the output says which), writes are forwarded to the Raft leader, so any node will \
do.

Endpoints are tried in the order given until one accepts the call; a node that answers \
with an error (other than UNAVAILABLE) is not retried elsewhere: another would say the same. \
Every call carries the admin token read from --token-file (the file named by [admin] \
token_file in the node config). A node with [admin] tls_cert serves TLS only: use https:// \
endpoints with --ca-file, and --cert-file/--key-file if it requires client certificates.

Exit status: 0 success, 1 the call failed (token refused, timed out, server error), 2 no \
endpoint reachable, 3 rejected input (a usage error, or a node refused the request).";

const EXAMPLES: &str = "\
Examples:
  dsrctl --endpoint http://198.18.0.2:7101,http://198.18.0.3:7101 --token-file admin.token status
  dsrctl farm list
  dsrctl farm add web --vip 198.18.0.100 --port 80 --protocol tcp --check tcp --check-interval 1s
  dsrctl backend add web b1 --ip 198.18.0.10 --weight 2
  dsrctl backend set web b1 --state drain      # no new flows; existing ones keep going
  dsrctl apply -f farms.toml --dry-run         # show the diff, write nothing
  dsrctl export > farms.toml
  dsrctl persistence list web --client 198.18.0.41
  dsrctl stats --watch --interval 2s
  dsrctl -o json status | jq .leader
  dsrctl -e https://198.18.0.2:7101 --ca-file ca.pem --token-file admin.token status

Environment:
  DSRCTL_ENDPOINT    endpoints, comma-separated (as --endpoint)
  DSRCTL_TOKEN_FILE  the admin token file (as --token-file)
  DSRCTL_CA_FILE     the CA of the nodes' admin certificates (as --ca-file)
  DSRCTL_CERT_FILE, DSRCTL_KEY_FILE  client certificate and key (as --cert-file, --key-file)";

/// dsrctl — operate a dsrlb cluster: status, farms, backends, apply/export, persistence, stats,
/// membership.
#[derive(Debug, Parser)]
#[command(
    name = "dsrctl",
    // `dsrctl (dsrlb) 0.1.0 (1a2b3c4d5e6f, 2026-12-04)`: the tool, then the release it
    // belongs to (GNU's `ls (GNU coreutils) 9.1`).
    version = buildinfo::TOOL_VERSION,
    long_about = LONG_ABOUT,
    after_help = "Run `dsrctl --help` for the long description and examples.",
    after_long_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// Admin API endpoints (URL or host:port), tried in turn until one answers; repeat the
    /// option or separate with commas.
    #[arg(
        long,
        short = 'e',
        env = "DSRCTL_ENDPOINT",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT,
        value_parser = parse_endpoint,
        global = true,
        help_heading = "Global options"
    )]
    pub endpoint: Vec<String>,

    /// File holding the admin token (the node's [admin] token_file).
    #[arg(
        long,
        env = "DSRCTL_TOKEN_FILE",
        global = true,
        help_heading = "Global options"
    )]
    pub token_file: Option<PathBuf>,

    /// PEM CA that signed the nodes' admin certificates; needed for https:// endpoints
    /// (dsrctl trusts no system CA).
    #[arg(
        long,
        env = "DSRCTL_CA_FILE",
        global = true,
        help_heading = "Global options"
    )]
    pub ca_file: Option<PathBuf>,

    /// PEM client certificate for a node with [admin] tls_client_ca (mutual TLS).
    #[arg(
        long,
        env = "DSRCTL_CERT_FILE",
        requires = "key_file",
        global = true,
        help_heading = "Global options"
    )]
    pub cert_file: Option<PathBuf>,

    /// PEM private key of --cert-file.
    #[arg(
        long,
        env = "DSRCTL_KEY_FILE",
        requires = "cert_file",
        global = true,
        help_heading = "Global options"
    )]
    pub key_file: Option<PathBuf>,

    /// Output format.
    #[arg(
        long,
        short = 'o',
        value_enum,
        default_value_t = Format::Table,
        global = true,
        help_heading = "Global options"
    )]
    pub output: Format,

    /// How long one call may take (membership changes wait for a new node to catch up).
    #[arg(
        long,
        default_value = "30s",
        value_parser = humantime::parse_duration,
        global = true,
        help_heading = "Global options"
    )]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Checks across options that clap cannot express: an https endpoint needs `--ca-file`
    /// (there is nothing else to verify the node's certificate against). A failure is a
    /// usage error (exit 3).
    pub fn checked(self) -> Result<Cli, clap::Error> {
        use clap::CommandFactory;
        if self.ca_file.is_none()
            && let Some(e) = self.endpoint.iter().find(|e| e.starts_with("https://"))
        {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!(
                    "{e} is https: give --ca-file (or DSRCTL_CA_FILE) with the CA that signed \
                     the node's admin certificate"
                ),
            ));
        }
        Ok(self)
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The table with more columns: `farm list` adds slots, TTL, limits and backends;
    /// `backend list` and `farm show` add the last check and which node ran it.
    Wide,
    /// JSON for scripts (one object; one per line with `stats --watch`).
    Json,
}

// Parsed once per run: the size of the farm verbs' options costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster health: members, leader, VIP owner, term, lease, per-VIP owner.
    Status,
    /// This client's version and every cluster member's (a mixed-version cluster shows).
    Version,
    /// Farms: list, show, add, set, delete.
    #[command(subcommand)]
    Farm(FarmCmd),
    /// Backends of a farm: list, add, set (drain, weight, priority...), delete.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// Make the cluster's farms match a TOML file of [[farm]] tables: create and update
    /// them; farms not in the file are deleted only with --prune. Prints the changes.
    #[command(after_help = "\
The file has the node config's [[farm]] schema; `dsrctl export` writes one. The changes are
printed as a plan: `+ farm` created, `~ farm` updated (with what changes), `- farm` deleted
(--prune only), `= farm` kept although not in the file (--prune would delete it).

Examples:
  dsrctl export > farms.toml && $EDITOR farms.toml
  dsrctl apply -f farms.toml --dry-run
  dsrctl apply -f farms.toml
  dsrctl apply -f farms.toml --prune --dry-run   # what deleting the rest would do")]
    Apply(ApplyArgs),
    /// Print every farm as TOML, in the schema `apply` reads.
    Export,
    /// Source-IP persistence entries of a farm: list (which client sticks to which backend),
    /// flush.
    #[command(subcommand)]
    Persistence(PersistenceCmd),
    /// Per farm and backend counters, from the VIP owner unless --node is given.
    Stats(StatsArgs),
    /// Cluster membership: add a node (learner, then voter once caught up), remove one.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Raft leadership (and with it VIP ownership).
    #[command(subcommand)]
    Leader(LeaderCmd),
    /// Print a shell completion script (no call is made).
    #[command(after_help = "\
Examples:
  dsrctl completion bash > /etc/bash_completion.d/dsrctl
  dsrctl completion zsh > \"${fpath[1]}/_dsrctl\"
  dsrctl completion fish > ~/.config/fish/completions/dsrctl.fish")]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the dsrctl(1) man page, roff (packaging; no call is made).
    #[command(hide = true)]
    Man,
}

impl Command {
    /// Verbs answered by this client alone, without a node, a token or TLS.
    pub fn is_local(&self) -> bool {
        matches!(self, Command::Completion { .. } | Command::Man)
    }
}

/// The exit status of a command line clap refused: 0 for `--help` and `--version` (printed
/// to stdout), 3 (rejected input, as a node's refusal is) for every usage error.
pub fn usage_exit_code(e: &clap::Error) -> u8 {
    if e.exit_code() == 0 { 0 } else { 3 }
}

/// Writes what a local verb ([`Command::is_local`]) prints.
pub fn local(command: &Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match command {
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut cmd, "dsrctl", out);
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(cmd).render(out),
        _ => Ok(()),
    }
}

#[derive(Debug, Subcommand)]
pub enum FarmCmd {
    /// List farms.
    List,
    /// Show one farm with its backends.
    Show {
        /// Farm name.
        name: String,
    },
    /// Create a farm (add backends with `backend add`).
    #[command(after_help = "\
Examples:
  dsrctl farm add web --vip 198.18.0.100 --port 80 --protocol tcp
  dsrctl farm add dns --vip 198.18.0.100 --ports 5300-5309 --protocol udp \\
      --persistence srcip --persistence-ttl 60s --check tcp --check-interval 1s")]
    Add(FarmAddArgs),
    /// Change a farm's settings; only the options given change, backends are kept.
    Set(FarmSetArgs),
    /// Delete a farm and its backends.
    Delete {
        /// Farm name.
        name: String,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("portspec").required(true).args(["port", "ports"])))]
pub struct FarmAddArgs {
    /// Farm name: letters, digits, `-`, `_`, `.`; 1-63 characters.
    pub name: String,
    /// The virtual IP address (IPv4 or IPv6; the farm's backends are of its family).
    #[arg(long)]
    pub vip: IpAddr,
    /// The virtual (= backend) port.
    #[arg(long)]
    pub port: Option<u16>,
    /// A port range, `A-B`.
    #[arg(long, value_parser = parse_port_range)]
    pub ports: Option<String>,
    /// Transport protocol.
    #[arg(long, value_parser = protocol())]
    pub protocol: Protocol,
    #[command(flatten)]
    pub settings: FarmSettings,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)
    .args(["vip", "port", "ports", "protocol", "scheduler", "persistence", "persistence_ttl",
           "check", "check_interval", "check_timeout", "check_rise", "check_fall",
           "check_port", "check_path", "check_host", "check_expect_status", "check_expect_body",
           "check_ca_file", "check_send", "check_expect", "check_program", "check_arg",
           "check_via_vip",
           "new_rate_limit", "new_rate_limit_burst", "new_rate_limit_farm",
           "new_rate_limit_farm_burst", "max_flows", "tcp_strict", "maglev_table_size"])))]
pub struct FarmSetArgs {
    /// Farm name.
    pub name: String,
    /// New virtual IP address (of the farm's family).
    #[arg(long)]
    pub vip: Option<IpAddr>,
    /// New port.
    #[arg(long, conflicts_with = "ports")]
    pub port: Option<u16>,
    /// New port range, `A-B`.
    #[arg(long, value_parser = parse_port_range)]
    pub ports: Option<String>,
    /// New protocol.
    #[arg(long, value_parser = protocol())]
    pub protocol: Option<Protocol>,
    #[command(flatten)]
    pub settings: FarmSettings,
}

/// Farm settings shared by `farm add` and `farm set`.
#[derive(Debug, Args)]
pub struct FarmSettings {
    /// Scheduler: `maglev` (each connection on its own), `srchash` (a client's connections
    /// to one backend), `wrr` or `rr` (turns per node: a takeover reshuffles).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Source-IP persistence.
    #[arg(long, value_enum)]
    pub persistence: Option<PersistenceMode>,
    /// Lifetime of a persistence entry, e.g. `60s`.
    #[arg(long, value_parser = parse_duration_text)]
    pub persistence_ttl: Option<String>,
    /// Health check (`none` removes it); the check-* options alone keep the farm's check
    /// type, or imply `tcp` when it has none.
    #[arg(long, value_enum)]
    pub check: Option<CheckKind>,
    /// Port probed when not the farm's first (required for a tcp/http check of a udp farm).
    #[arg(long)]
    pub check_port: Option<u16>,
    /// http/https: request path, e.g. `/health`.
    #[arg(long)]
    pub check_path: Option<String>,
    /// http/https: the Host header (and TLS server name).
    #[arg(long)]
    pub check_host: Option<String>,
    /// http/https: accepted statuses, `200` or `200-399`.
    #[arg(long)]
    pub check_expect_status: Option<String>,
    /// http/https: a substring the body must contain.
    #[arg(long)]
    pub check_expect_body: Option<String>,
    /// https: PEM file (on the nodes) of the CA that signs the backends' certificates.
    #[arg(long)]
    pub check_ca_file: Option<String>,
    /// udp: the payload sent.
    #[arg(long)]
    pub check_send: Option<String>,
    /// udp: a substring the reply must contain.
    #[arg(long)]
    pub check_expect: Option<String>,
    /// exec: the program (absolute path on the nodes, run without a shell).
    #[arg(long)]
    pub check_program: Option<String>,
    /// exec: one argument of the program (repeat for more).
    #[arg(long = "check-arg", allow_hyphen_values = true)]
    pub check_arg: Vec<String>,
    /// tcp/http/https/udp: probe through the VIP on each backend (the DSR path).
    #[arg(long)]
    pub check_via_vip: Option<bool>,
    /// Time between checks of one backend, e.g. `2s`.
    #[arg(long, value_parser = parse_duration_text)]
    pub check_interval: Option<String>,
    /// How long one check may take, e.g. `1s`.
    #[arg(long, value_parser = parse_duration_text)]
    pub check_timeout: Option<String>,
    /// Successes in a row that bring a down backend up.
    #[arg(long)]
    pub check_rise: Option<u32>,
    /// Failures in a row that take an up backend down.
    #[arg(long)]
    pub check_fall: Option<u32>,
    /// New flows per second per source address; 0 removes the limit.
    #[arg(long)]
    pub new_rate_limit: Option<u32>,
    /// Burst of `--new-rate-limit`; 0: one second's worth.
    #[arg(long)]
    pub new_rate_limit_burst: Option<u32>,
    /// New flows per second of the whole farm; 0 removes the limit.
    #[arg(long)]
    pub new_rate_limit_farm: Option<u32>,
    /// Burst of `--new-rate-limit-farm`; 0: one second's worth.
    #[arg(long)]
    pub new_rate_limit_farm_burst: Option<u32>,
    /// Established flows per backend beyond which it takes no new flow; 0 removes the limit.
    #[arg(long)]
    pub max_flows: Option<u32>,
    /// Drop TCP packets other than SYNs of flows the owner does not know (after the
    /// takeover grace).
    #[arg(long)]
    pub tcp_strict: Option<bool>,
    /// Slots of the farm's Maglev table: a prime from 251 to 1048573. Absent: chosen from
    /// the backends when the farm is added, kept after. Changing it moves flows.
    #[arg(long)]
    pub maglev_table_size: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PersistenceMode {
    None,
    Srcip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
    Udp,
    Exec,
    None,
}

impl CheckKind {
    /// The name in the config file and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Udp => "udp",
            CheckKind::Exec => "exec",
            CheckKind::None => "none",
        }
    }
}

/// `--protocol`: a protocol by the name the config file uses, offered as a `ValueEnum` is
/// (listed in help, suggested after a typo).
fn protocol() -> impl TypedValueParser<Value = Protocol> {
    PossibleValuesParser::new(Protocol::ALL.map(Protocol::as_str))
        .try_map(|name| Protocol::from_name(&name).ok_or("not a protocol"))
}

/// `--state`: a backend state by name, each listed with what it does to flows.
fn backend_state() -> impl TypedValueParser<Value = BackendState> {
    let listed = BackendState::ALL.map(|s| {
        PossibleValue::new(s.as_str()).help(match s {
            BackendState::Up => "Serves",
            BackendState::Drain => "No new flows or persistence entries; existing flows keep going",
            BackendState::Off => "Out at once, existing flows included",
        })
    });
    PossibleValuesParser::new(listed)
        .try_map(|name| BackendState::from_name(&name).ok_or("not a backend state"))
}

#[derive(Debug, Subcommand)]
pub enum BackendCmd {
    /// List a farm's backends.
    List {
        /// Farm name.
        farm: String,
    },
    /// Add a backend to a farm.
    Add(BackendAddArgs),
    /// Change a backend; only the options given change.
    #[command(after_help = "\
Examples:
  dsrctl backend set web b1 --state drain    # maintenance: no new flows, existing ones finish
  dsrctl backend set web b1 --state off      # cut: out at once
  dsrctl backend set web b3 --priority 2     # backup tier: serves when tier 1 is all down")]
    Set(BackendSetArgs),
    /// Remove a backend from a farm.
    Delete {
        /// Farm name.
        farm: String,
        /// Backend name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct BackendAddArgs {
    /// Farm name.
    pub farm: String,
    /// Backend name, unique in its farm.
    pub name: String,
    /// The backend's address, of the VIP's family (on the datapath interface's subnet, or IPv6 link-local).
    #[arg(long)]
    pub ip: IpAddr,
    /// Pin the backend's MAC (`aa:bb:cc:dd:ee:ff`) instead of learning it by ARP.
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<String>,
    /// Relative weight, 0-65535 (0 takes no new flows).
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    /// Administrative state.
    #[arg(long, value_parser = backend_state(), default_value_t = BackendState::Up)]
    pub state: BackendState,
    /// Backup tier: the lowest priority with a live backend serves.
    #[arg(long, default_value_t = 1)]
    pub priority: u32,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)
    .args(["ip", "mac", "weight", "state", "priority"])))]
pub struct BackendSetArgs {
    /// Farm name.
    pub farm: String,
    /// Backend name.
    pub name: String,
    /// New address (of the farm's family).
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// New pinned MAC; an empty string returns to learning it by ARP.
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<String>,
    /// New weight, 0-65535.
    #[arg(long)]
    pub weight: Option<u32>,
    /// `drain` stops new flows, `off` cuts existing ones too, `up` serves again.
    #[arg(long, value_parser = backend_state())]
    pub state: Option<BackendState>,
    /// New backup tier.
    #[arg(long)]
    pub priority: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// TOML file with [[farm]] tables (`-` reads standard input).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Show the changes without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the cluster's farms that the file does not list (without it they are
    /// kept, and the plan lists them).
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Subcommand)]
pub enum PersistenceCmd {
    /// List a farm's persistence entries: client, backend, when last seen, time to expiry.
    #[command(after_help = "\
Entries are replicated: every node lists the same ones. LAST SEEN is measured against this
machine's clock, EXPIRES IN against the answering node's; an entry shown as `due` goes with the
leader's next persistence batch.

Examples:
  dsrctl persistence list web
  dsrctl persistence list web --client 198.18.0.41
  dsrctl -o json persistence list web --limit 100000 | jq '.entries[].backend'")]
    List(PersistenceListArgs),
    /// Forget a farm's persistence entries, on every node: its clients are scheduled afresh
    /// on their next connection.
    #[command(after_help = "\
Examples:
  dsrctl persistence flush web                 # every entry of farm web
  dsrctl persistence flush web --backend b1    # only the clients pinned to b1")]
    Flush(PersistenceFlushArgs),
}

#[derive(Debug, Args)]
pub struct PersistenceListArgs {
    /// Farm name (its persistence must be `srcip`).
    pub farm: String,
    /// Only this client's entry.
    #[arg(long)]
    pub client: Option<IpAddr>,
    /// At most this many entries, in address order.
    #[arg(
        long,
        default_value_t = PERSISTENCE_LIST_DEFAULT,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(PERSISTENCE_LIST_MAX))
    )]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct PersistenceFlushArgs {
    /// Farm name (its persistence must be `srcip`).
    pub farm: String,
    /// Only the entries pinned to this backend of the farm.
    #[arg(long)]
    pub backend: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Ask this node for its own counters (default: the VIP owner's).
    #[arg(long)]
    pub node: Option<u64>,
    /// Refresh the table in place until Ctrl-C, with rates per second.
    #[arg(long)]
    pub watch: bool,
    /// Time between refreshes with --watch.
    #[arg(long, default_value = "1s", value_parser = parse_interval, requires = "watch")]
    pub interval: Duration,
    /// Stop after this many refreshes (with --watch).
    #[arg(long, requires = "watch")]
    pub count: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Add a node: it joins as a learner and becomes a voter once caught up.
    Add {
        /// The new node's id ([node] id in its config).
        id: u64,
        /// Its peer address, host:port.
        address: String,
    },
    /// Remove a node from the cluster.
    Remove {
        /// The node's id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaderCmd {
    /// Move leadership (and VIP ownership) to the named voter.
    Transfer {
        /// The node id that should lead.
        #[arg(value_name = "ID")]
        to: u64,
    },
}

impl PersistenceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PersistenceMode::None => "none",
            PersistenceMode::Srcip => "srcip",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("dsrctl").chain(args.iter().copied()))
            .and_then(Cli::checked)
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoints_are_normalised_and_split() {
        let cli = parse(&["-e", "198.18.0.2:7101,http://198.18.0.3:7101", "status"]).expect("ok");
        assert_eq!(
            cli.endpoint,
            ["http://198.18.0.2:7101", "http://198.18.0.3:7101"]
        );
        let cli = parse(&["status", "--endpoint", "a:1", "--endpoint", "b:2"]).expect("ok");
        assert_eq!(cli.endpoint, ["http://a:1", "http://b:2"]);
        assert_eq!(cli.output, Format::Table);
        let cli = parse(&[
            "status",
            "-e",
            "https://198.18.0.2:7101",
            "--ca-file",
            "ca.pem",
        ])
        .expect("https with a CA");
        assert_eq!(cli.endpoint, ["https://198.18.0.2:7101"]);
        let e = parse(&["status", "-e", "https://198.18.0.2:7101"]).expect_err("no CA");
        assert!(e.to_string().contains("--ca-file"), "{e}");
    }

    #[test]
    fn usage_errors_are_exit_code_3() {
        let bad: &[&[&str]] = &[
            &[
                "farm",
                "add",
                "web",
                "--vip",
                "1.2.3.4",
                "--protocol",
                "tcp",
            ],
            &[
                "farm",
                "add",
                "web",
                "--vip",
                "1.2.3.4",
                "--port",
                "80",
                "--ports",
                "1-2",
                "--protocol",
                "tcp",
            ],
            &[
                "farm",
                "add",
                "web",
                "--vip",
                "not-an-ip",
                "--port",
                "80",
                "--protocol",
                "tcp",
            ],
            &[
                "farm",
                "add",
                "web",
                "--vip",
                "1.2.3.4",
                "--ports",
                "90-80",
                "--protocol",
                "tcp",
            ],
            &[
                "farm",
                "add",
                "web",
                "--vip",
                "1.2.3.4",
                "--port",
                "80",
                "--protocol",
                "sctp",
            ],
            &["farm", "set", "web"],
            &["farm", "set", "web", "--persistence-ttl", "soon"],
            &["backend", "set", "web", "b1"],
            &[
                "backend",
                "add",
                "web",
                "b1",
                "--ip",
                "1.2.3.4",
                "--mac",
                "zz:00:00:00:00:00",
            ],
            &[
                "backend", "add", "web", "b1", "--ip", "1.2.3.4", "--state", "sleeping",
            ],
            &["stats", "--count", "3"],
            &["stats", "--watch", "--interval", "1ms"],
            &["status", "-o", "yaml"],
            &["status", "-e", "https://198.18.0.2:7101"],
            &[
                "status",
                "--cert-file",
                "c.pem",
                "-e",
                "https://a:1",
                "--ca-file",
                "ca.pem",
            ],
            &["status", "-e", "ftp://198.18.0.2:7101"],
            &["apply"],
            &["leader", "transfer", "one"],
            &["persistence", "list"],
            &["persistence", "list", "web", "--client", "198.18.0"],
            &["persistence", "list", "web", "--limit", "0"],
            &["persistence", "list", "web", "--limit", "100001"],
            &["persistence", "flush"],
            &["frobnicate"],
        ];
        for args in bad {
            let e = parse(args).expect_err(&format!("{args:?} should be refused"));
            assert_eq!(usage_exit_code(&e), 3, "{args:?}: {e}");
        }
        // Help and version are not failures.
        let e = parse(&["--help"]).expect_err("help is clap's early exit");
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        assert_eq!(usage_exit_code(&e), 0);
    }
}
