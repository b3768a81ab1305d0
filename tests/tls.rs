//! TLS with certificates the test makes: a CA, and a certificate it signs for 127.0.0.1.
//! Clients: redis-cli --tls against shardis' TLS listener. Backends: redis-server listening
//! only on a TLS port, reached by shardis over TLS (data and health checks).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, Redis, Shardis};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// PEM files in `dir`: ca.pem, and server.pem + server.key for 127.0.0.1 / localhost.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "shardis test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = leaf
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn redis_cli_tls(ca: &Path, port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli is installed by scripts/install-deps.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

#[test]
fn clients_speak_tls_on_the_tls_listener() {
    let dir = tempfile::TempDir::new().unwrap();
    let pki = make_pki(dir.path());
    let nodes: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = nodes.iter().collect();
    let tls_port = free_port();
    let proxy = Shardis::start_with(&format!(
        "[tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n{}",
        pki.cert.display(),
        pki.key.display(),
        common::shards_toml(&refs)
    ));
    let _log = proxy.log_on_panic();
    common::wait_for("the TLS listener", Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port))
            .map(drop)
            .map_err(|e| e.to_string())
    });
    for i in 0..20 {
        let key = format!("tls:{i}");
        assert_eq!(
            redis_cli_tls(&pki.ca, tls_port, &["SET", &key, &i.to_string()]),
            (true, "OK".to_string())
        );
    }
    // Split across shards and merged, through TLS.
    let keys: Vec<String> = (0..20).map(|i| format!("tls:{i}")).collect();
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let (ok, out) = redis_cli_tls(&pki.ca, tls_port, &mget);
    assert!(ok, "{out}");
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    // The plain listener serves the same data.
    let got: String = redis::cmd("GET")
        .arg("tls:7")
        .query(&mut proxy.conn())
        .unwrap();
    assert_eq!(got, "7");
    // A client that trusts another CA refuses the proxy's certificate...
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = make_pki(&other_dir);
    let (_, out) = redis_cli_tls(&other.ca, tls_port, &["PING"]);
    assert!(!out.contains("PONG"), "a foreign CA was accepted: {out}");
    // ... and plaintext on the TLS port fails the handshake without harming anyone.
    let mut raw = common::Raw::connect(tls_port);
    raw.send(&common::encode(&[b"PING"]));
    let mut answer = Vec::new();
    use std::io::Read;
    let _ = raw.stream.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"+PONG"),
        "plaintext was served on the TLS port"
    );
    assert_eq!(
        redis_cli_tls(&pki.ca, tls_port, &["PING"]),
        (true, "PONG".to_string())
    );
    // Every TLS client's place under max_clients is given back once it is gone (the place
    // is held by its TLS bridge, which ends with the connection).
    let mut plain = common::Raw::connect(proxy.port());
    common::wait_for("TLS clients counted out", Duration::from_secs(5), || {
        let info = String::from_utf8(plain.call(&[b"INFO", b"clients"])).unwrap();
        (common::info_field(&info, "connected_clients").as_deref() == Some("1"))
            .then_some(())
            .ok_or(info)
    });
}

/// A redis-server that listens on a TLS port only.
fn tls_redis(pki: &Pki, dir: &Path) -> common::Proc {
    common::start_on_free_port("redis-server (TLS)", |port| {
        let mut c = Command::new("redis-server");
        c.args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&pki.cert)
        .arg("--tls-key-file")
        .arg(&pki.key)
        .arg("--tls-ca-cert-file")
        .arg(&pki.ca)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        c
    })
}

#[test]
fn shardis_reaches_nodes_over_tls() {
    let dir = tempfile::TempDir::new().unwrap();
    let pki = make_pki(dir.path());
    let nodes: Vec<common::Proc> = (0..2).map(|_| tls_redis(&pki, dir.path())).collect();
    let shards = common::shards_at(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
    let proxy = Shardis::start_with(&format!(
        "[backend]\ntls = true\ntls_ca = \"{}\"\n{shards}",
        pki.ca.display()
    ));
    let _log = proxy.log_on_panic();
    let mut c = proxy.conn();
    common::set_and_read_back(&mut c, 50);
    // Both nodes hold keys (read over TLS by redis-cli), and the health checks (over TLS too)
    // see them up.
    for n in &nodes {
        let (ok, out) = redis_cli_tls(&pki.ca, n.port, &["DBSIZE"]);
        assert!(ok && out.parse::<i64>().unwrap() > 0, "{out}");
    }
    common::wait_for("nodes up", Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("shards").query(&mut c).unwrap();
        (info.matches("health=up").count() == 2)
            .then_some(())
            .ok_or(info)
    });
    // A CA that did not sign the nodes' certificates: the handshake fails, and the error
    // says so.
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = make_pki(&other_dir);
    let wrong = Shardis::start_with(&format!(
        "[backend]\ntls = true\ntls_ca = \"{}\"\n{shards}",
        other.ca.display()
    ));
    let err = redis::cmd("GET")
        .arg("k1")
        .query::<Option<String>>(&mut wrong.conn())
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS handshake"), "{err}");
}
