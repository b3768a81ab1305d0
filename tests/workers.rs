//! Worker threads: each has its own connections to every node, and clients served by different
//! workers keep their order and see one another's writes, blocking pops, messages and WATCHes.
//!
//! `scripts/test.sh` also runs the whole suite with `SHARDIS__WORKERS=3`, so every other test
//! covers several workers too; the tests here set `workers` themselves.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster, Redis, Shardis};
use redis::Commands;

/// The `connections=` the proxy's `INFO shards` reports for its one node.
fn open_connections(proxy: &Shardis) -> Result<usize, String> {
    let mut conn = common::try_connect(proxy.port()).ok_or("proxy not answering")?;
    let text: String = redis::cmd("INFO")
        .arg("shards")
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.split(',').find_map(|f| f.strip_prefix("connections=")))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no connections= in {text}"))
}

/// Connections the node has now, the caller's own included.
fn node_clients(admin: &mut redis::Connection) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
    list.lines().count()
}

#[test]
fn each_worker_opens_its_own_connections_to_every_node() {
    let node = Redis::start();
    let mut admin = node.conn();
    let idle = node_clients(&mut admin);
    // Connections the node sees from a proxy with `workers` workers, once its pool is open.
    let mut from_proxy = |workers: usize| {
        let extra = format!("workers = {workers}\n[backend]\nconnections = 2");
        let proxy = Shardis::in_front_of(&[&node], &extra);
        let _log = proxy.log_on_panic();
        let want = 2 * workers;
        wait_for(
            "the pool open",
            Duration::from_secs(10),
            || match open_connections(&proxy)? {
                n if n == want => Ok(()),
                n => Err(format!("{n} of {want} open")),
            },
        );
        let seen = node_clients(&mut admin) - idle;
        drop(proxy);
        wait_for(
            "the proxy's connections closed",
            Duration::from_secs(10),
            || match node_clients(&mut admin) {
                n if n == idle => Ok(()),
                n => Err(format!("{n} connections, {idle} before")),
            },
        );
        seen
    };
    let one = from_proxy(1);
    let three = from_proxy(3);
    // The health checks and the rest are the same for both: the difference is the shared
    // connections of the two extra workers.
    assert_eq!(
        three - one,
        4,
        "one worker: {one} connections, three workers: {three}"
    );
}

#[test]
fn clients_on_different_workers_keep_their_order_and_see_each_others_writes() {
    let c = Cluster::start("workers = 3");
    let _log = c.proxy.log_on_panic();
    // Twelve clients at once: each new one goes to the least loaded worker, so they spread
    // over the three.
    let port = c.proxy.port();
    let clients: Vec<_> = (0..12)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conn = common::connect(port);
                let key = format!("order:{t}");
                let mut pipe = redis::pipe();
                for _ in 0..300 {
                    pipe.incr(&key, 1);
                }
                let counts: Vec<i64> = pipe.query(&mut conn).unwrap();
                assert_eq!(counts, (1..=300).collect::<Vec<i64>>(), "client {t}");
                // Written through this client's worker; every other client reads it below.
                let _: () = conn.set(format!("seen:{t}"), t).unwrap();
                conn
            })
        })
        .collect();
    let mut conns: Vec<redis::Connection> =
        clients.into_iter().map(|t| t.join().unwrap()).collect();
    for (reader, conn) in conns.iter_mut().enumerate() {
        for t in 0..12 {
            let v: Option<i64> = conn.get(format!("seen:{t}")).unwrap();
            assert_eq!(v, Some(t), "client {reader} reading client {t}'s write");
        }
    }
}

#[test]
fn blocking_pops_messages_and_watches_reach_across_workers() {
    let c = Cluster::start("workers = 3");
    let _log = c.proxy.log_on_panic();
    // Opened one after another and kept open: three in a row land on three workers.
    let mut popper = c.proxy.conn();
    let mut subscriber = c.proxy.conn();
    let mut other = c.proxy.conn();

    let pushed = std::thread::spawn({
        let port = c.proxy.port();
        move || {
            let mut pusher = common::connect(port);
            std::thread::sleep(Duration::from_millis(200));
            let _: i64 = pusher.lpush("jobs", "job-1").unwrap();
        }
    });
    let popped: Option<(String, String)> = popper.blpop("jobs", 5.0).unwrap();
    pushed.join().unwrap();
    assert_eq!(popped, Some(("jobs".into(), "job-1".into())));

    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("news").unwrap();
    let receivers: i64 = other.publish("news", "hello").unwrap();
    assert_eq!(receivers, 1);
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let message = pubsub.get_message().unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "hello");
    drop(pubsub);

    // A WATCHed key changed by a client of another worker aborts the transaction.
    let _: () = popper.set("balance", 10).unwrap();
    redis::cmd("WATCH")
        .arg("balance")
        .query::<()>(&mut popper)
        .unwrap();
    let _: () = other.set("balance", 20).unwrap();
    let exec: Option<(String,)> = redis::pipe()
        .atomic()
        .set("balance", 30)
        .query(&mut popper)
        .unwrap();
    assert_eq!(
        exec, None,
        "EXEC ran although another client changed the WATCHed key"
    );
    let balance: i64 = other.get("balance").unwrap();
    assert_eq!(balance, 20);
}
