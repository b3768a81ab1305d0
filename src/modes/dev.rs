//! `shardis dev`: a local demo that starts its own redis-server children and serves them.
//!
//! The children must never outlive the proxy. On a normal exit (Ctrl-C, SIGTERM) and on a
//! panic that unwinds, [`Children`] kills them in `Drop`. If shardis itself is killed outright
//! (SIGKILL, abort), the kernel does it: each child is started through util-linux's
//! `setpriv --pdeathsig KILL`, from the main thread, which lives as long as the process.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many shards (one redis-server each).
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:6380")]
    pub listen: SocketAddr,
    /// Key hash: xxh3, fnv1a_64 or md5.
    #[arg(long, default_value = "xxh3")]
    pub hash: String,
}

/// The redis-server children; killed and reaped on drop.
struct Children {
    /// Each child with the port it serves.
    procs: Vec<(Child, u16)>,
    dir: PathBuf,
}

impl Drop for Children {
    fn drop(&mut self) {
        for (child, _) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(args: DevArgs) -> ExitCode {
    if !(1..=64).contains(&args.shards) {
        eprintln!("shardis dev: --shards must be between 1 and 64");
        return ExitCode::FAILURE;
    }
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!(
            "shardis dev: redis-server not found. Install it with `apt-get install -y redis-server` \
             (or run scripts/demo.sh, which does)."
        );
        return ExitCode::FAILURE;
    }
    let children = match start_children(args.shards) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardis dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut toml = format!(
        "listen = \"{}\"\n[routing]\nhash = \"{}\"\n",
        args.listen, args.hash
    );
    for (i, port) in children_ports(&children).iter().enumerate() {
        toml.push_str(&format!(
            "[[shards]]\nname = \"shard{i}\"\nprimary = \"127.0.0.1:{port}\"\n"
        ));
    }
    let config = match Config::from_toml(&toml) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardis dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shards = args.shards;
    let ports = children_ports(&children);
    let served = crate::server::serve(config, None, |server| {
        println!(
            "shardis dev: {shards} shards on 127.0.0.1 ports {ports:?}; proxy on {}. Try: redis-cli -p {}",
            server.local_addr(),
            server.local_addr().port()
        );
    });
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardis dev: {e}");
            ExitCode::FAILURE
        }
    };
    drop(children);
    println!("shardis dev: stopped the redis-server children");
    code
}

fn children_ports(children: &Children) -> Vec<u16> {
    children.procs.iter().map(|(_, port)| *port).collect()
}

fn start_children(count: usize) -> Result<Children, String> {
    let dir = std::env::temp_dir().join(format!("shardis-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut children = Children {
        procs: Vec::new(),
        dir: dir.clone(),
    };
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !setpriv {
        eprintln!(
            "shardis dev: setpriv (util-linux) not found: children are stopped on a clean exit, \
             but would outlive a SIGKILL of shardis"
        );
    }
    for i in 0..count {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let data = dir.join(format!("shard{i}"));
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let mut cmd = if setpriv {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--", "redis-server"]);
            c
        } else {
            Command::new("redis-server")
        };
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&data)
            .args(["--logfile", "redis.log", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        children.procs.push((child, port));
        wait_ready(port)?;
    }
    Ok(children)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "redis-server on port {port} did not start within 10 s"
    ))
}
