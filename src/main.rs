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

fn serve(config: Config, source: shardis::proxy::ConfigSource) -> ExitCode {
    match shardis::server::serve(config, Some(source), |_| {}) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardis: {e}");
            ExitCode::FAILURE
        }
    }
}
