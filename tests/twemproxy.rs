//! Key placement identical to twemproxy 0.5.0 (Debian's nutcracker), run side by side.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{free_port, Proc, Redis, Shardis};

struct Pool {
    hash: &'static str,
    distribution: &'static str,
    weights: [u32; 3],
    named: bool,
}

/// The nutcracker.yml of `pool` over `nodes`, listening on `port`: servers named a, b, c ...
/// when `pool.named`.
fn nutcracker_yaml(port: u16, nodes: &[Redis], pool: &Pool) -> String {
    let servers: String = nodes
        .iter()
        .zip(pool.weights)
        .enumerate()
        .map(|(i, (n, w))| {
            let name = if pool.named {
                format!(" {}", (b'a' + i as u8) as char)
            } else {
                String::new()
            };
            format!("   - {}:{w}{name}\n", n.addr())
        })
        .collect();
    format!(
        "pool:\n  listen: 127.0.0.1:{port}\n  hash: {}\n  distribution: {}\n  hash_tag: \"{{}}\"\n  redis: true\n  auto_eject_hosts: false\n  timeout: 2000\n  servers:\n{servers}",
        pool.hash, pool.distribution
    )
}

fn nutcracker(nodes: &[Redis], pool: &Pool, dir: &Path) -> Proc {
    let bin =
        common::which("nutcracker").expect("nutcracker is installed by scripts/install-deps.sh");
    for _ in 0..10 {
        let port = free_port();
        let conf = dir.join("nutcracker.yml");
        std::fs::write(&conf, nutcracker_yaml(port, nodes, pool)).unwrap();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(dir.join("nutcracker.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Proc { child, port };
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("nutcracker did not start");
}

/// Keys of many shapes: plain, hash-tagged, empty tags, and bytes >= 0x80.
fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 5 {
            0 => format!("user:{i}").into_bytes(),
            1 => format!("{{tag{}}}:item:{i}", i % 37).into_bytes(),
            2 => format!("{{}}empty-tag:{i}").into_bytes(),
            3 => {
                let mut k = format!("bin:{i}:").into_bytes();
                k.extend_from_slice(&[0x80, 0xff, (i % 256) as u8, 0xc3, 0xa9]);
                k
            }
            _ => format!("k{i}").into_bytes(),
        })
        .collect()
}

/// Writes every key through nutcracker running `pool`, then reads each back through shardis
/// configured with `shardis_body` (the harness adds its listen line): every key must be found,
/// so it is where nutcracker put it.
fn assert_placed_like_nutcracker(
    nodes: &[Redis],
    pool: &Pool,
    dir: &Path,
    keys: &[Vec<u8>],
    shardis_body: &str,
) {
    for n in nodes {
        let _: () = redis::cmd("FLUSHALL").query(&mut n.conn()).unwrap();
    }
    let twem = nutcracker(nodes, pool, dir);
    // Raw RESP: the redis crate's connection handshake (CLIENT SETINFO) makes nutcracker
    // close the connection.
    let mut via_twem = common::Raw::connect(twem.port);
    let wire: Vec<u8> = keys
        .iter()
        .flat_map(|k| common::encode(&[b"SET", k, k]))
        .collect();
    via_twem.send(&wire);
    for k in keys {
        assert_eq!(
            via_twem.reply(),
            b"+OK\r\n",
            "SET {:?} via nutcracker",
            String::from_utf8_lossy(k)
        );
    }

    let proxy = Shardis::start_with(shardis_body);
    let _log = proxy.log_on_panic();
    let mut via_shardis = proxy.conn();
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("GET").arg(k);
    }
    let got: Vec<Option<Vec<u8>>> = pipe.query(&mut via_shardis).unwrap();
    let misplaced = keys
        .iter()
        .zip(&got)
        .filter(|(k, v)| v.as_deref() != Some(&k[..]))
        .count();
    assert_eq!(
        misplaced,
        0,
        "{}/{} weights {:?} named {}: {misplaced} of {} keys placed differently from nutcracker",
        pool.hash,
        pool.distribution,
        pool.weights,
        pool.named,
        keys.len()
    );
    // And every node got a share, so the comparison means something.
    for n in nodes {
        let count: i64 = redis::cmd("DBSIZE").query(&mut n.conn()).unwrap();
        assert!(
            count > keys.len() as i64 / 20,
            "a node holds only {count} of {} keys",
            keys.len()
        );
    }
}

#[test]
fn every_key_lands_where_nutcracker_puts_it() {
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let dir = tempfile::TempDir::new().unwrap();
    let pools = [
        Pool {
            hash: "fnv1a_64",
            distribution: "ketama",
            weights: [1, 1, 1],
            named: true,
        },
        Pool {
            hash: "fnv1a_64",
            distribution: "ketama",
            weights: [1, 2, 3],
            named: true,
        },
        Pool {
            hash: "fnv1a_64",
            distribution: "ketama",
            weights: [1, 1, 1],
            named: false,
        },
        Pool {
            hash: "md5",
            distribution: "ketama",
            weights: [2, 1, 1],
            named: true,
        },
        Pool {
            hash: "fnv1a_64",
            distribution: "modula",
            weights: [1, 2, 1],
            named: true,
        },
    ];
    let keys = keys(10_000);
    for pool in &pools {
        let shards: String = nodes
            .iter()
            .zip(pool.weights)
            .enumerate()
            .map(|(i, (n, w))| {
                let name = if pool.named {
                    format!("name = \"{}\"\n", (b'a' + i as u8) as char)
                } else {
                    String::new()
                };
                format!(
                    "[[shards]]\n{name}primary = \"{}\"\nweight = {w}\n",
                    n.addr()
                )
            })
            .collect();
        let body = format!(
            "[routing]\nhash = \"{}\"\ndistribution = \"{}\"\nhash_tag = \"{{}}\"\n{shards}",
            pool.hash, pool.distribution
        );
        assert_placed_like_nutcracker(&nodes, pool, dir.path(), &keys, &body);
    }
}

/// `shardis --from-twemproxy` on the nutcracker.yml nutcracker runs gives a configuration that
/// places every key where nutcracker does.
#[test]
fn converted_configuration_places_keys_like_nutcracker() {
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let dir = tempfile::TempDir::new().unwrap();
    let pools = [
        Pool {
            hash: "fnv1a_64",
            distribution: "ketama",
            weights: [1, 2, 3],
            named: true,
        },
        // Unnamed: twemproxy names them host:port on the ring.
        Pool {
            hash: "fnv1a_64",
            distribution: "ketama",
            weights: [2, 1, 1],
            named: false,
        },
        Pool {
            hash: "md5",
            distribution: "ketama",
            weights: [1, 1, 2],
            named: true,
        },
    ];
    let keys = keys(2_000);
    for pool in &pools {
        let yaml = dir.path().join("to-convert.yml");
        std::fs::write(&yaml, nutcracker_yaml(22121, &nodes, pool)).unwrap();
        let out = Command::new(common::shardis_bin())
            .arg("--from-twemproxy")
            .arg(&yaml)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shardis --from-twemproxy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let toml = String::from_utf8(out.stdout).unwrap();
        assert!(toml.contains("listen = \"127.0.0.1:22121\"\n"), "{toml}");
        assert!(toml.contains("timeout = \"2000ms\"\n"), "{toml}");
        // The harness writes its own listen line, on a free port.
        let body: String = toml
            .lines()
            .filter(|l| !l.starts_with("listen = "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_placed_like_nutcracker(&nodes, pool, dir.path(), &keys, &body);
    }
}

#[test]
fn from_twemproxy_names_the_file_and_what_cannot_be_converted() {
    let dir = tempfile::TempDir::new().unwrap();
    let yaml = dir.path().join("memcached.yml");
    std::fs::write(
        &yaml,
        "cache:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n",
    )
    .unwrap();
    let out = Command::new(common::shardis_bin())
        .arg("--from-twemproxy")
        .arg(&yaml)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("shardis: {}: pool cache: redis:", yaml.display())),
        "{err}"
    );
}

/// A file that mixes Redis and memcached pools (as twemproxy's own sample does): the Redis pools
/// are converted, and each memcached pool is named on stderr as skipped.
#[test]
fn from_twemproxy_converts_the_redis_pools_of_a_mixed_file() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/twemproxy-mixed.yml"
    );
    let out = Command::new(common::shardis_bin())
        .args(["--from-twemproxy", sample])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let parts: Vec<&str> = stdout.split("\n# ---\n").collect();
    assert_eq!(parts.len(), 2, "{stdout}");
    assert!(parts[0].contains("\n# pool sessions\n"), "{stdout}");
    assert!(parts[1].starts_with("# pool feeds\n"), "{stdout}");
    for part in &parts {
        shardis::config::Config::from_toml(part).unwrap_or_else(|e| panic!("{e}\n{part}"));
    }
    let skipped: Vec<&str> = stderr.lines().collect();
    assert_eq!(skipped.len(), 3, "{stderr}");
    for (line, pool) in skipped.iter().zip(["pages", "fragments", "local"]) {
        assert!(
            line.starts_with(&format!("shardis: {sample}: pool {pool} skipped: ")),
            "{line}"
        );
        assert!(line.contains("memcached"), "{line}");
    }
}
