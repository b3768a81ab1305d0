//! Key placement identical to twemproxy 0.5.0 (Debian's nutcracker), run side by side.

mod common;

use std::process::{Command, Stdio};

use common::{free_port, Proc, Redis, Shardis};

struct Pool {
    hash: &'static str,
    distribution: &'static str,
    weights: [u32; 3],
    named: bool,
}

fn nutcracker(nodes: &[Redis], pool: &Pool, dir: &std::path::Path) -> Proc {
    let bin =
        common::which("nutcracker").expect("nutcracker is installed by scripts/install-deps.sh");
    for _ in 0..10 {
        let port = free_port();
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
        let yaml = format!(
            "pool:\n  listen: 127.0.0.1:{port}\n  hash: {}\n  distribution: {}\n  hash_tag: \"{{}}\"\n  redis: true\n  auto_eject_hosts: false\n  timeout: 2000\n  servers:\n{servers}",
            pool.hash, pool.distribution
        );
        let conf = dir.join("nutcracker.yml");
        std::fs::write(&conf, yaml).unwrap();
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
        for n in &nodes {
            let _: () = redis::cmd("FLUSHALL").query(&mut n.conn()).unwrap();
        }
        let twem = nutcracker(&nodes, pool, dir.path());
        // Raw RESP: the redis crate's connection handshake (CLIENT SETINFO) makes nutcracker
        // close the connection.
        let mut via_twem = common::Raw::connect(twem.port);
        let wire: Vec<u8> = keys
            .iter()
            .flat_map(|k| common::encode(&[b"SET", k, k]))
            .collect();
        via_twem.send(&wire);
        for k in &keys {
            assert_eq!(
                via_twem.reply(),
                b"+OK\r\n",
                "SET {:?} via nutcracker",
                String::from_utf8_lossy(k)
            );
        }

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
        let proxy = Shardis::start_with(&format!(
            "[routing]\nhash = \"{}\"\ndistribution = \"{}\"\nhash_tag = \"{{}}\"\n{shards}",
            pool.hash, pool.distribution
        ));
        let mut via_shardis = proxy.conn();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("GET").arg(k);
        }
        let got: Vec<Option<Vec<u8>>> = pipe.query(&mut via_shardis).unwrap();
        let misplaced = keys
            .iter()
            .zip(&got)
            .filter(|(k, v)| v.as_deref() != Some(&k[..]))
            .count();
        assert_eq!(
            misplaced, 0,
            "{}/{} weights {:?} named {}: {misplaced} of {} keys placed differently from nutcracker",
            pool.hash, pool.distribution, pool.weights, pool.named, keys.len()
        );
        // And every node got a share, so the comparison means something.
        for n in &nodes {
            let count: i64 = redis::cmd("DBSIZE").query(&mut n.conn()).unwrap();
            assert!(count > 1_000, "a node holds only {count} keys");
        }
    }
}
