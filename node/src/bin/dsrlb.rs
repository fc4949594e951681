//! `dsrlb`: the load-balancer daemon and its lab tools. Thin: everything lives in `node`.

use clap::{Parser, Subcommand};
use node::config::Loaded;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where a packaged node keeps its config (`DSRLB_CONFIG` or `--config` say otherwise).
const DEFAULT_CONFIG: &str = "/etc/dsrlb/dsrlb.toml";

/// A clustered layer-4 load balancer that forwards by Direct Server Return.
#[derive(Parser)]
#[command(name = "dsrlb", version = buildinfo::LONG_VERSION, long_about = None)]
struct Cli {
    /// How `run` and `witness` write their log lines to stderr: `text`, or `json` (one
    /// object per line) for a log pipeline. `RUST_LOG` filters either.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "DSRLB_LOG_FORMAT",
        default_value_t
    )]
    log_format: node::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with the given config file.
    Run {
        /// The node config (TOML).
        #[arg(long, short, env = "DSRLB_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run a witness: a Raft voter with no datapath that never owns a VIP, the third member
    /// that lets a pair of load balancers fail over. Needs no root and no farms.
    Witness {
        /// The witness config (TOML): `[node]`, `[cluster]`, optionally `[metrics]`.
        #[arg(long, short, env = "DSRLB_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file and exit (0 when valid).
    CheckConfig {
        /// The node config (TOML).
        #[arg(long, short, env = "DSRLB_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Build a self-contained lab in network namespaces and show DSR load balancing (root).
    Demo(node::demo::DemoArgs),
    /// Print the dsrlb(8) man page, roff (packaging).
    #[command(hide = true)]
    Man,
    /// Serve the lab's backend protocol (used by the lab inside backend namespaces).
    #[command(hide = true)]
    LabBackend(lab::backend::BackendArgs),
    /// Download a paced, verified pattern stream and report progress (compose client).
    #[command(hide = true)]
    LabStream(LabStreamArgs),
}

/// Arguments of `dsrlb lab-stream`: the lab's verified stream, from a process that already
/// runs inside its host (the compose client container).
#[derive(clap::Args)]
struct LabStreamArgs {
    /// `ip:port` of a lab backend, or of a VIP in front of them.
    #[arg(long)]
    to: std::net::SocketAddr,
    /// Bytes to download.
    #[arg(long)]
    bytes: u64,
    /// Pace, in bytes per second.
    #[arg(long, default_value_t = 1 << 20)]
    rate: u64,
    /// How often to print a `progress <ms> <bytes>` line.
    #[arg(long, default_value_t = 50)]
    every_ms: u64,
}

/// Prints `progress <ms since start> <bytes verified>` lines while the stream runs, then
/// `done bytes=<n> longest_stall_ms=<ms>` (exit 0) or `error: <why>` (exit 1). The longest
/// stall is the longest time, at `every_ms` resolution, in which no byte arrived.
fn lab_stream(args: &LabStreamArgs) -> ExitCode {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    let progress = AtomicU64::new(0);
    let every = Duration::from_millis(args.every_ms.max(1));
    let start = Instant::now();
    let result = std::thread::scope(|scope| {
        let stream =
            scope.spawn(|| lab::stream::download_paced(args.to, args.bytes, args.rate, &progress));
        let mut out = std::io::stdout().lock();
        let (mut last, mut last_change, mut longest) = (0u64, Duration::ZERO, Duration::ZERO);
        // Ends with the stream, whose every read is bounded by the lab's read timeout.
        while !stream.is_finished() {
            std::thread::sleep(every);
            let (now, got) = (start.elapsed(), progress.load(Ordering::Relaxed));
            if got != last {
                (last, last_change) = (got, now);
            }
            longest = longest.max(now - last_change);
            // A closed stdout must not stop the download; the summary says how it went.
            let _ = writeln!(out, "progress {} {got}", now.as_millis());
            let _ = out.flush();
        }
        let result = stream
            .join()
            .unwrap_or_else(|_| Err(lab::LabError::Spec("stream panicked".into())));
        (result, longest)
    });
    match result {
        (Ok(n), longest) => {
            println!("done bytes={n} longest_stall_ms={}", longest.as_millis());
            ExitCode::SUCCESS
        }
        (Err(e), _) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `dsrlb run` and `dsrlb witness`: load the config (as a witness's when `witness` is set or
/// the file says so), then run until SIGTERM/SIGINT.
fn run(path: &std::path::Path, witness: bool, log_format: node::logging::LogFormat) -> ExitCode {
    node::logging::init(log_format);
    let loaded = match node::config::load_role(path, witness) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dsrlb: {e}");
            return ExitCode::from(2);
        }
    };
    match node::daemon::raise_fd_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("dsrlb-ctl")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dsrlb: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match loaded {
        Loaded::Node(config) => runtime.block_on(node::daemon::run_reloading(
            config,
            path.to_path_buf(),
            node::signals::terminated(),
        )),
        Loaded::Witness { config, ignored } => {
            if !ignored.is_empty() {
                tracing::info!(?ignored, "tables a witness does not use are ignored");
            }
            runtime.block_on(async {
                // SIGHUP must not end a witness (its default action would): nothing in a
                // witness's file can change without a restart, and it says so.
                node::signals::on_hangup(
                    "SIGHUP: a witness reloads nothing; restart it to apply a changed file",
                );
                node::witness::run(config, node::signals::terminated()).await
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("dsrlb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Man => {
            use clap::CommandFactory;
            let man = clap_mangen::Man::new(Cli::command()).section("8");
            match man.render(&mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dsrlb: cannot write the man page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => run(&config, false, cli.log_format),
        Command::Witness { config } => run(&config, true, cli.log_format),
        Command::CheckConfig { config } => {
            match node::config::load_role(&config, false).and_then(|l| match &l {
                Loaded::Node(c) => node::config::check_host(c).map(|()| l),
                Loaded::Witness { .. } => Ok(l),
            }) {
                Ok(Loaded::Node(c)) => {
                    println!(
                        "{}: valid (node {}, {} farm(s), {} backend(s))",
                        config.display(),
                        c.node_id,
                        c.farms.len(),
                        c.farms.iter().map(|f| f.backends.len()).sum::<usize>()
                    );
                    for why in c.warnings() {
                        println!("warning: {why}");
                    }
                    ExitCode::SUCCESS
                }
                Ok(Loaded::Witness { config: c, ignored }) => {
                    println!(
                        "{}: valid (witness, node {}, {} member(s))",
                        config.display(),
                        c.node_id,
                        c.cluster.members.len()
                    );
                    for table in ignored {
                        println!("note: [{table}] is not used by a witness");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dsrlb: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo(args) => match node::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dsrlb demo: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::LabStream(args) => lab_stream(&args),
        Command::LabBackend(args) => match lab::backend::run_backend(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dsrlb lab-backend: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
