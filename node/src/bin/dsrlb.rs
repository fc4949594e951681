//! `dsrlb`: the load-balancer daemon and its lab tools. Thin: everything lives in `node`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// dsrlb — a clustered layer-4 load balancer that forwards by Direct Server Return.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with the given config file.
    Run {
        /// The node config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit (0 when valid).
    CheckConfig {
        /// The node config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Build a self-contained lab in network namespaces and show DSR load balancing (root).
    Demo(node::demo::DemoArgs),
    /// Serve the lab's backend protocol (used by the lab inside backend namespaces).
    #[command(hide = true)]
    LabBackend(node::lab::backend::BackendArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            node::logging::init();
            let config = match node::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("dsrlb: {e}");
                    return ExitCode::from(2);
                }
            };
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
            match runtime.block_on(node::daemon::run(config, node::signals::terminated())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("dsrlb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match node::config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: valid (node {}, {} farm(s), {} backend(s))",
                    config.display(),
                    c.node_id,
                    c.farms.len(),
                    c.farms.iter().map(|f| f.backends.len()).sum::<usize>()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dsrlb: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo(args) => match node::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dsrlb demo: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::LabBackend(args) => match node::lab::backend::run_backend(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dsrlb lab-backend: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
