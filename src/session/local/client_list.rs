//! CLIENT LIST and CLIENT INFO's line for one client, in Redis 7's fields and order, from what
//! its session reported to the registry.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::proxy::clients::{ClientEntry, LastCommand};

/// One CLIENT LIST line, in Redis's `key=value` form: Redis 7.0's fields in its order, then
/// 7.2's `lib-name` and `lib-ver`.
pub fn line(client: &ClientEntry) -> String {
    let Some(s) = client.state() else {
        return String::new();
    };
    let text = |b: &Option<Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let mut flags = String::new();
    if s.sub + s.psub + s.ssub > 0 {
        flags.push('P');
    }
    if s.multi >= 0 {
        flags.push('x');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let io = &s.io;
    let argv_mem = s.cmd.as_ref().map_or(0, LastCommand::argv_mem);
    let rbs = io.qbuf + io.qbuf_free;
    // What this client holds in the proxy: its buffers and what is queued for it.
    let tot_mem = rbs + io.out_capacity + argv_mem + io.multi_mem + io.omem;
    let mut line = String::with_capacity(320);
    let _ = writeln!(
        line,
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db=0 sub={} psub={} ssub={} multi={} qbuf={} qbuf-free={} argv-mem={argv_mem} multi-mem={} rbs={rbs} rbp={} obl={} oll={} omem={} tot-mem={tot_mem} events={} cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
        client.id,
        client.addr,
        client.laddr,
        client.fd,
        text(&s.name),
        client.age_secs(),
        s.last_active.elapsed().as_secs(),
        s.sub,
        s.psub,
        s.ssub,
        s.multi,
        io.qbuf,
        io.qbuf_free,
        io.multi_mem,
        s.qbuf_peak,
        io.obl,
        io.oll,
        io.omem,
        if io.writing { "rw" } else { "r" },
        s.cmd.as_ref().map_or_else(|| "NULL".to_string(), LastCommand::name),
        s.user,
        s.resp,
        text(&s.lib_name),
        text(&s.lib_ver),
    );
    line
}
