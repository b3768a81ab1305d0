//! The `shardis` command line: parse flags, load the configuration, run. No logic here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardis::config::{Config, ConfigError};

#[derive(Parser)]
#[command(
    name = "shardis",
    version,
    about = "A Redis-protocol sharded cache proxy"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', default_value = "conf/shardis.toml", global = true)]
    config: PathBuf,
    /// Validate the configuration, print what is wrong, and exit.
    #[arg(long, short = 't')]
    check_config: bool,
    /// Listen address, overriding the configuration's `listen`.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Print the shardis configuration equivalent to a twemproxy (nutcracker) YAML file, and
    /// exit. Keys land on the same servers as under twemproxy.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    from_twemproxy: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Local demo: start redis-server children on free loopback ports and serve them.
    Dev(shardis::modes::dev::DevArgs),
}

fn main() -> ExitCode {
    give_big_blocks_back();
    let cli = Cli::parse();
    if let Some(yaml) = &cli.from_twemproxy {
        return shardis::modes::twemproxy::run(yaml);
    }
    if let Some(Command::Dev(args)) = cli.command {
        shardis::telemetry::init_logging(&Default::default());
        return shardis::modes::dev::run(args);
    }
    let mut config = match Config::load(&cli.config) {
        Ok(config) => config,
        // Not the file's fault: the error names the variable.
        Err(e @ ConfigError::Env { .. }) => {
            eprintln!("shardis: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("shardis: {}: {e}", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    shardis::telemetry::init_logging(&config.log);
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if cli.check_config {
        println!(
            "{}: ok ({} shards, listen {})",
            cli.config.display(),
            config.shards.len(),
            config.listen
        );
        return ExitCode::SUCCESS;
    }
    let source = shardis::proxy::ConfigSource {
        path: cli.config.clone(),
        listen: cli.listen,
    };
    serve(config, source)
}

/// A big value passes through the proxy in pieces of up to 1 MiB, each freed once written
/// (`backend::stream`). glibc's malloc maps blocks of 128 KiB or more on their own and unmaps them
/// when freed, but after the first such block is freed it raises that threshold to the block's
/// size: from then on the pieces come from its heap, where freed memory stays with the process,
/// so one big value would leave the proxy as big as the most of it ever in flight. Setting the
/// threshold fixes it where it starts and turns the raising off.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_big_blocks_back() {
    // SAFETY: mallopt only changes a malloc tunable; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_big_blocks_back() {}

fn serve(config: Config, source: shardis::proxy::ConfigSource) -> ExitCode {
    match shardis::server::serve(config, Some(source), |_| {}) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardis: {e}");
            ExitCode::FAILURE
        }
    }
}
