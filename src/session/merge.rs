//! Structured replies from several nodes made into one: CONFIG GET, SLOWLOG GET, LATENCY
//! LATEST, MEMORY STATS and FUNCTION STATS from every primary, and a command run on every node.
//!
//! The nodes are trusted (they are the operator's Redis servers), so their replies are decoded
//! whole by redis-protocol, in the protocol the connection speaks. Each merge's rule is stated
//! on its function and in the README's command table.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::Reply;
use crate::resp::{encode, Proto, Value};

/// A decoded reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    Int(i64),
    Double(f64),
    /// A bulk, simple or verbatim string.
    Str(Bytes),
    Null,
    Array(Vec<Tree>),
    Map(Vec<(Tree, Tree)>),
    Error(Bytes),
}

impl Tree {
    /// The reply in `frame`, whole, as the connection's protocol encodes it.
    pub fn decode(frame: &Bytes, proto: Proto) -> Option<Tree> {
        match proto {
            Proto::Resp2 => {
                let (frame, _) = redis_protocol::resp2::decode::decode_bytes(frame).ok()??;
                Some(Tree::from_resp2(frame))
            }
            Proto::Resp3 => {
                let (frame, _) =
                    redis_protocol::resp3::decode::complete::decode_bytes(frame).ok()??;
                Some(Tree::from_resp3(frame))
            }
        }
    }

    fn from_resp2(frame: redis_protocol::resp2::types::BytesFrame) -> Tree {
        use redis_protocol::resp2::types::BytesFrame as F;
        match frame {
            F::SimpleString(s) | F::BulkString(s) => Tree::Str(s),
            F::Error(e) => Tree::Error(Bytes::copy_from_slice(e.as_bytes())),
            F::Integer(n) => Tree::Int(n),
            F::Array(items) => Tree::Array(items.into_iter().map(Tree::from_resp2).collect()),
            F::Null => Tree::Null,
        }
    }

    fn from_resp3(frame: redis_protocol::resp3::types::BytesFrame) -> Tree {
        use redis_protocol::resp3::types::BytesFrame as F;
        match frame {
            F::BlobString { data, .. }
            | F::SimpleString { data, .. }
            | F::VerbatimString { data, .. }
            | F::BigNumber { data, .. }
            | F::ChunkedString(data) => Tree::Str(data),
            F::BlobError { data, .. } => Tree::Error(data),
            F::SimpleError { data, .. } => Tree::Error(Bytes::copy_from_slice(data.as_bytes())),
            F::Boolean { data, .. } => Tree::Int(i64::from(data)),
            F::Null => Tree::Null,
            F::Number { data, .. } => Tree::Int(data),
            F::Double { data, .. } => Tree::Double(data),
            F::Array { data, .. } | F::Push { data, .. } => {
                Tree::Array(data.into_iter().map(Tree::from_resp3).collect())
            }
            F::Set { data, .. } => Tree::Array(data.into_iter().map(Tree::from_resp3).collect()),
            // redis-protocol 6 builds a map from its last pair to its first: reversed back,
            // so fields keep Redis's order.
            F::Map { data, .. } => Tree::Map(
                data.into_iter()
                    .rev()
                    .map(|(k, v)| (Tree::from_resp3(k), Tree::from_resp3(v)))
                    .collect(),
            ),
            F::Hello { .. } => Tree::Null,
        }
    }

    /// The pairs of a map, or of a flat `[name, value, ...]` array as RESP2 sends maps.
    fn pairs(self) -> Option<Vec<(Tree, Tree)>> {
        match self {
            Tree::Map(pairs) => Some(pairs),
            Tree::Array(items) if items.len() % 2 == 0 => {
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    pairs.push((k, v));
                }
                Some(pairs)
            }
            _ => None,
        }
    }

    fn text(&self) -> Option<&[u8]> {
        match self {
            Tree::Str(s) => Some(s),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Tree::Int(n) => Some(*n),
            Tree::Str(s) => crate::resp::parse_i64(s),
            _ => None,
        }
    }

    /// The reply for the client, in its protocol. A map keeps its shape: a map in RESP3, a flat
    /// array in RESP2.
    pub fn into_value(self) -> Value {
        match self {
            Tree::Int(n) => Value::Int(n),
            Tree::Double(d) => Value::Double(d),
            Tree::Str(s) => Value::Bulk(s),
            Tree::Null => Value::Null,
            Tree::Array(items) => Value::Array(items.into_iter().map(Tree::into_value).collect()),
            Tree::Map(pairs) => Value::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into_value(), v.into_value()))
                    .collect(),
            ),
            Tree::Error(e) => Value::Error(e),
        }
    }
}

/// One part's reply decoded, or the reply the client gets instead: its failure or error
/// reply, or an error naming a reply that could not be read.
fn decode_one(reply: Reply, proto: Proto) -> Result<Tree, Bytes> {
    let frame = reply.map_err(|e| encode::error_bytes(&format!("ERR {e}")))?;
    if crate::resp::reply::is_error(&frame) {
        return Err(frame);
    }
    Tree::decode(&frame, proto).ok_or_else(unexpected)
}

/// Every part's reply decoded, or the first part's failure ([`decode_one`]).
fn decode_all(replies: Vec<Reply>, proto: Proto) -> Result<Vec<Tree>, Bytes> {
    replies.into_iter().map(|r| decode_one(r, proto)).collect()
}

/// The replies of the parts that answered, decoded; the first failure only when none did.
fn decode_answered(replies: Vec<Reply>, proto: Proto) -> Result<Vec<Tree>, Bytes> {
    let mut answered = Vec::with_capacity(replies.len());
    let mut failure = None;
    for reply in replies {
        match decode_one(reply, proto) {
            Ok(tree) => answered.push(tree),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if answered.is_empty() {
        return Err(failure.unwrap_or_else(unexpected));
    }
    Ok(answered)
}

fn unexpected() -> Bytes {
    encode::error_bytes("ERR unexpected reply from a shard")
}

/// Parameters whose value the proxy reports itself, for CONFIG GET.
pub type ConfigOverrides = Vec<(&'static str, String)>;

/// CONFIG GET: every parameter any primary reported, with the first shard's value (shards in
/// configuration order), then the proxy's own value for what it decides itself (`overrides`),
/// and an empty one for credentials.
/// Where primaries disagree the first shard's value is answered and the difference is logged.
/// A shard that cannot answer is left out (a tool asking on connect should not fail because
/// one shard is down); an error only when none answered.
pub fn config_get(
    replies: Vec<Reply>,
    proto: Proto,
    overrides: &ConfigOverrides,
) -> Result<Value, Bytes> {
    let mut merged: Vec<(Bytes, Bytes)> = Vec::new();
    let mut differ: Vec<String> = Vec::new();
    for tree in decode_answered(replies, proto)? {
        let pairs = tree.pairs().ok_or_else(unexpected)?;
        for (name, value) in pairs {
            let (Tree::Str(name), Tree::Str(value)) = (name, value) else {
                return Err(unexpected());
            };
            match merged.iter().find(|(n, _)| *n == name) {
                Some((_, v)) if *v != value => {
                    differ.push(String::from_utf8_lossy(&name).into_owned());
                }
                Some(_) => {}
                None => merged.push((name, value)),
            }
        }
    }
    if !differ.is_empty() {
        static DIFFER: crate::telemetry::LogLimit = crate::telemetry::LogLimit::new();
        if let Some(unlogged) = DIFFER.pass() {
            tracing::warn!(
                unlogged,
                "CONFIG GET: the primaries disagree on {}; answered with the first shard's value",
                differ.join(", ")
            );
        }
    }
    for (name, value) in &mut merged {
        if crate::command::is_credential(name) {
            *value = Bytes::new();
            continue;
        }
        if let Some((_, own)) = overrides
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        {
            *value = Bytes::from(own.clone());
        }
    }
    Ok(Value::Map(
        merged
            .into_iter()
            .map(|(n, v)| (Value::Bulk(n), Value::Bulk(v)))
            .collect(),
    ))
}

/// SLOWLOG GET \[count\]: every primary's entries, newest first (by the time each was logged,
/// then by duration), at most `count` of them (`None` for all). Each entry keeps the id its
/// node gave it.
pub fn slowlog(replies: Vec<Reply>, proto: Proto, count: Option<usize>) -> Result<Value, Bytes> {
    let mut entries: Vec<Tree> = Vec::new();
    for tree in decode_all(replies, proto)? {
        match tree {
            Tree::Array(items) => entries.extend(items),
            _ => return Err(unexpected()),
        }
    }
    let field = |e: &Tree, i: usize| match e {
        Tree::Array(f) => f.get(i).and_then(Tree::int).unwrap_or(0),
        _ => 0,
    };
    entries.sort_by_key(|e| std::cmp::Reverse((field(e, 1), field(e, 2))));
    if let Some(count) = count {
        entries.truncate(count);
    }
    Ok(Tree::Array(entries).into_value())
}

/// LATENCY LATEST: per event, the most recent spike over every primary (its time and
/// latency), with the largest maximum any primary recorded; by event name.
pub fn latency_latest(replies: Vec<Reply>, proto: Proto) -> Result<Value, Bytes> {
    let mut events: Vec<(Bytes, i64, i64, i64)> = Vec::new();
    for tree in decode_all(replies, proto)? {
        let Tree::Array(items) = tree else {
            return Err(unexpected());
        };
        for item in items {
            let Tree::Array(f) = item else {
                return Err(unexpected());
            };
            let (Some(name), Some(at), Some(latest), Some(max)) = (
                f.first().and_then(Tree::text),
                f.get(1).and_then(Tree::int),
                f.get(2).and_then(Tree::int),
                f.get(3).and_then(Tree::int),
            ) else {
                return Err(unexpected());
            };
            match events.iter_mut().find(|e| &e.0[..] == name) {
                Some(e) => {
                    if at > e.1 {
                        (e.1, e.2) = (at, latest);
                    }
                    e.3 = e.3.max(max);
                }
                None => events.push((Bytes::copy_from_slice(name), at, latest, max)),
            }
        }
    }
    events.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Value::Array(
        events
            .into_iter()
            .map(|(name, at, latest, max)| {
                Value::Array(vec![
                    Value::Bulk(name),
                    Value::Int(at),
                    Value::Int(latest),
                    Value::Int(max),
                ])
            })
            .collect(),
    ))
}

/// How MEMORY STATS combines one figure over the primaries: sizes and counts add up; ratios,
/// percentages and per-key averages take the largest (the worst shard).
fn memory_rule(name: &[u8]) -> Rule {
    let name = String::from_utf8_lossy(name);
    if name.contains("ratio")
        || name.contains("percentage")
        || name == "fragmentation"
        || name == "keys.bytes-per-key"
    {
        Rule::Max
    } else {
        Rule::Sum
    }
}

#[derive(Clone, Copy)]
enum Rule {
    Sum,
    Max,
}

/// MEMORY STATS: every figure combined over the primaries by [`memory_rule`], nested ones
/// (`db.0`) field by field.
pub fn memory_stats(replies: Vec<Reply>, proto: Proto) -> Result<Value, Bytes> {
    combine_all(decode_all(replies, proto)?, &memory_rule)
}

/// FUNCTION STATS, asked of every node on connections of its own (RESP2 replies): the function
/// running on any node (the first found; a read-only one may run on a replica), and per engine
/// the largest library and function counts (every primary is given the same functions). Nodes
/// that cannot be reached are left out; an error only when none answered.
pub fn function_stats(replies: Vec<Reply>) -> Result<Value, Bytes> {
    let mut running: Option<Tree> = None;
    let mut engines: Option<Vec<(Tree, Tree)>> = None;
    for tree in decode_answered(replies, Proto::Resp2)? {
        for (name, value) in tree.pairs().ok_or_else(unexpected)? {
            match name.text() {
                Some(b"running_script") if running.is_none() && value != Tree::Null => {
                    // name, command (an array of arguments), duration_ms
                    running = Some(Tree::Map(value.pairs().ok_or_else(unexpected)?));
                }
                Some(b"engines") => {
                    // engine -> { libraries_count, functions_count }
                    let mut these = Vec::new();
                    for (engine, stats) in value.pairs().ok_or_else(unexpected)? {
                        these.push((engine, Tree::Map(stats.pairs().ok_or_else(unexpected)?)));
                    }
                    engines = Some(match engines {
                        None => these,
                        Some(acc) => combine_pairs(acc, these, &|_: &[u8]| Rule::Max)
                            .ok_or_else(unexpected)?,
                    });
                }
                _ => {}
            }
        }
    }
    let Some(engines) = engines else {
        return Err(unexpected());
    };
    Ok(Tree::Map(vec![
        (
            Tree::Str(Bytes::from_static(b"running_script")),
            running.unwrap_or(Tree::Null),
        ),
        (
            Tree::Str(Bytes::from_static(b"engines")),
            Tree::Map(engines),
        ),
    ])
    .into_value())
}

fn combine_all(trees: Vec<Tree>, rule: &dyn Fn(&[u8]) -> Rule) -> Result<Value, Bytes> {
    let mut trees = trees.into_iter();
    let mut acc = trees.next().ok_or_else(unexpected)?;
    for tree in trees {
        acc = combine(acc, tree, b"", rule).ok_or_else(unexpected)?;
    }
    Ok(acc.into_value())
}

/// One figure of two nodes' replies combined: maps field by field (RESP2's flat arrays as
/// maps), numbers by `rule` for their field name, a null giving way to a value.
fn combine(a: Tree, b: Tree, name: &[u8], rule: &dyn Fn(&[u8]) -> Rule) -> Option<Tree> {
    let number = |t: &Tree| -> Option<f64> {
        match t {
            Tree::Int(n) => Some(*n as f64),
            Tree::Double(d) => Some(*d),
            Tree::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
            _ => None,
        }
    };
    Some(match (a, b) {
        (Tree::Null, b) => b,
        (a, Tree::Null) => a,
        (Tree::Int(x), Tree::Int(y)) => Tree::Int(match rule(name) {
            Rule::Sum => x.saturating_add(y),
            Rule::Max => x.max(y),
        }),
        (Tree::Map(x), Tree::Map(y)) => Tree::Map(combine_pairs(x, y, rule)?),
        // RESP2 sends maps as flat arrays: combined as maps, sent back as they came.
        (Tree::Array(x), Tree::Array(y)) => {
            let pairs = combine_pairs(Tree::Array(x).pairs()?, Tree::Array(y).pairs()?, rule)?;
            Tree::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        }
        (a, b) => {
            let (x, y) = (number(&a)?, number(&b)?);
            let v = match rule(name) {
                Rule::Sum => x + y,
                Rule::Max => x.max(y),
            };
            match a {
                Tree::Str(_) => Tree::Str(Bytes::from(v.to_string())),
                _ => Tree::Double(v),
            }
        }
    })
}

fn combine_pairs(
    mut x: Vec<(Tree, Tree)>,
    y: Vec<(Tree, Tree)>,
    rule: &dyn Fn(&[u8]) -> Rule,
) -> Option<Vec<(Tree, Tree)>> {
    for (k, v) in y {
        match x.iter_mut().find(|(n, _)| *n == k) {
            Some((n, mine)) => {
                let name = n.text().unwrap_or_default().to_vec();
                let taken = std::mem::replace(mine, Tree::Null);
                *mine = combine(taken, v, &name, rule)?;
            }
            None => x.push((k, v)),
        }
    }
    Some(x)
}

/// A command run on every node of every shard (CONFIG SET, CONFIG RESETSTAT, SLOWLOG RESET,
/// LATENCY RESET): when every node accepted it, the first node's reply, or the sum of their
/// integers (LATENCY RESET's count); else one error naming each node where it failed and why.
pub fn every_node(replies: Vec<(Arc<str>, Reply)>) -> Bytes {
    let total = replies.len();
    let mut failures = Vec::new();
    let mut first = None;
    let mut sum: Option<i64> = Some(0);
    for (node, reply) in replies {
        match reply {
            Ok(frame) if !crate::resp::reply::is_error(&frame) => {
                sum = sum
                    .zip(crate::resp::reply::integer(&frame))
                    .map(|(a, b)| a + b);
                first.get_or_insert(frame);
            }
            Ok(frame) => {
                let text = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
                failures.push(format!("{node}: {text}"));
            }
            // The error names the node itself.
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        return match (sum, first) {
            (Some(n), Some(_)) => {
                let mut out = bytes::BytesMut::new();
                encode::integer(&mut out, n);
                out.freeze()
            }
            (_, first) => first.unwrap_or_else(unexpected),
        };
    }
    encode::error_bytes(&format!(
        "ERR failed on {} of {total} nodes: {}",
        failures.len(),
        failures.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Reply {
        Ok(Bytes::from(s.to_string()))
    }

    #[test]
    fn config_get_takes_the_first_shard_and_the_proxy_overrides() {
        let a = ok("*4\r\n$9\r\nmaxmemory\r\n$3\r\n100\r\n$9\r\ndatabases\r\n$2\r\n16\r\n");
        let b = ok("*4\r\n$9\r\nmaxmemory\r\n$3\r\n200\r\n$9\r\ndatabases\r\n$2\r\n16\r\n");
        let v = config_get(vec![a, b], Proto::Resp2, &vec![("databases", "1".into())]).unwrap();
        assert_eq!(
            v,
            Value::Map(vec![
                (Value::bulk("maxmemory"), Value::bulk("100")),
                (Value::bulk("databases"), Value::bulk("1")),
            ])
        );
        // A shard that is down is left out; with none answering, its error.
        let down = || -> Reply {
            Err(crate::backend::BackendError::Unavailable {
                node: Arc::from("shard 'a'"),
                reason: "primary is down".into(),
            })
        };
        let b = ok("*2\r\n$9\r\nmaxmemory\r\n$3\r\n200\r\n");
        let v = config_get(vec![down(), b], Proto::Resp2, &Vec::new()).unwrap();
        assert_eq!(
            v,
            Value::Map(vec![(Value::bulk("maxmemory"), Value::bulk("200"))])
        );
        let e = config_get(vec![down()], Proto::Resp2, &Vec::new()).unwrap_err();
        assert!(e.starts_with(b"-ERR shard 'a' unavailable"), "{e:?}");
    }

    #[test]
    fn memory_stats_sums_sizes_and_keeps_the_worst_ratio() {
        let a = ok("%3\r\n$15\r\ntotal.allocated\r\n:100\r\n$13\r\nfragmentation\r\n,1.5\r\n$4\r\ndb.0\r\n%1\r\n$1\r\nx\r\n:1\r\n");
        let b = ok("%3\r\n$15\r\ntotal.allocated\r\n:50\r\n$13\r\nfragmentation\r\n,2.5\r\n$4\r\ndb.0\r\n%1\r\n$1\r\nx\r\n:2\r\n");
        let v = memory_stats(vec![a, b], Proto::Resp3).unwrap();
        assert_eq!(
            v,
            Value::Map(vec![
                (Value::bulk("total.allocated"), Value::Int(150)),
                (Value::bulk("fragmentation"), Value::Double(2.5)),
                (
                    Value::bulk("db.0"),
                    Value::Map(vec![(Value::bulk("x"), Value::Int(3))])
                ),
            ])
        );
    }

    #[test]
    fn slowlog_is_newest_first_and_cut_to_count() {
        let entry = |id: i64, at: i64| {
            format!("*6\r\n:{id}\r\n:{at}\r\n:10\r\n*1\r\n$3\r\nGET\r\n$0\r\n\r\n$0\r\n\r\n")
        };
        let a = ok(&format!("*2\r\n{}{}", entry(1, 300), entry(0, 100)));
        let b = ok(&format!("*1\r\n{}", entry(0, 200)));
        let Value::Array(items) = slowlog(vec![a, b], Proto::Resp2, Some(2)).unwrap() else {
            panic!("an array")
        };
        let times: Vec<Value> = items
            .into_iter()
            .map(|e| match e {
                Value::Array(f) => f[1].clone(),
                _ => Value::Null,
            })
            .collect();
        assert_eq!(times, vec![Value::Int(300), Value::Int(200)]);
    }

    #[test]
    fn function_stats_takes_a_running_function_as_it_is_and_the_largest_counts() {
        let idle = ok("*4\r\n$14\r\nrunning_script\r\n*-1\r\n$7\r\nengines\r\n*2\r\n$3\r\nLUA\r\n*4\r\n$15\r\nlibraries_count\r\n:1\r\n$15\r\nfunctions_count\r\n:2\r\n");
        let busy = |name: &str| {
            ok(&format!("*4\r\n$14\r\nrunning_script\r\n*6\r\n$4\r\nname\r\n${}\r\n{name}\r\n$7\r\ncommand\r\n*2\r\n$5\r\nfcall\r\n${}\r\n{name}\r\n$11\r\nduration_ms\r\n:5\r\n$7\r\nengines\r\n*2\r\n$3\r\nLUA\r\n*4\r\n$15\r\nlibraries_count\r\n:1\r\n$15\r\nfunctions_count\r\n:2\r\n", name.len(), name.len()))
        };
        let down: Reply = Err(crate::backend::BackendError::Unavailable {
            node: Arc::from("n"),
            reason: "connect: Connection refused".into(),
        });
        // Two functions running on two nodes, one node down: the first running one.
        let v = function_stats(vec![idle, busy("f1"), down, busy("f2")]).unwrap();
        let Value::Map(top) = v else { panic!("a map") };
        let Value::Map(script) = &top[0].1 else {
            panic!("{top:?}")
        };
        assert_eq!(script[0], (Value::bulk("name"), Value::bulk("f1")));
        assert_eq!(
            top[1].1,
            Value::Map(vec![(
                Value::bulk("LUA"),
                Value::Map(vec![
                    (Value::bulk("libraries_count"), Value::Int(1)),
                    (Value::bulk("functions_count"), Value::Int(2)),
                ])
            )])
        );
    }

    #[test]
    fn every_node_names_where_it_failed() {
        let r = every_node(vec![
            (Arc::from("shard 'a' node n1"), ok("+OK\r\n")),
            (
                Arc::from("shard 'b' node n2"),
                ok("-ERR Invalid argument\r\n"),
            ),
        ]);
        assert_eq!(
            &r[..],
            b"-ERR failed on 1 of 2 nodes: shard 'b' node n2: ERR Invalid argument\r\n"
        );
        let r = every_node(vec![(Arc::from("n"), ok("+OK\r\n"))]);
        assert_eq!(&r[..], b"+OK\r\n");
    }
}
