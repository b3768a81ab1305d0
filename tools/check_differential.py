#!/usr/bin/env python3
"""Differential checker for tests/data/differential.redis.

Runs every command of a list file against two Redis-protocol servers on one
connection each and compares the raw reply bytes, first in RESP2, then (after
FLUSHALL and HELLO 3 on both) again in RESP3.

    python3 tools/check_differential.py 127.0.0.1:7001 127.0.0.1:7002 \
        tests/data/differential.redis

List file format: one command per line in Redis inline syntax (the rules of
redis-cli / sdssplitargs): words split on whitespace, double-quoted strings
with the escapes \\n \\r \\t \\b \\a \\" \\\\ \\xHH, single-quoted strings
where only \\' is an escape. Blank lines and lines starting with '#' are
ignored.

Exit status: 0 if all replies are identical, 1 on the first mismatch,
2 on usage/parse/connection errors.

Standard library only.
"""

import argparse
import socket
import sys

HEXDIGITS = "0123456789abcdefABCDEF"


class ParseError(Exception):
    pass


def split_args(line):
    """Split one line like redis-cli's sdssplitargs. Returns a list of bytes."""
    args = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        inq = insq = False
        done = False
        while not done:
            if inq:
                if i >= n:
                    raise ParseError("unterminated double quote")
                c = line[i]
                if (c == "\\" and i + 3 < n and line[i + 1] == "x"
                        and line[i + 2] in HEXDIGITS and line[i + 3] in HEXDIGITS):
                    cur.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif c == "\\" and i + 1 < n:
                    i += 1
                    e = line[i]
                    cur += {"n": b"\n", "r": b"\r", "t": b"\t",
                            "b": b"\b", "a": b"\a"}.get(e, e.encode("utf-8"))
                elif c == '"':
                    # closing quote must be followed by a space or end
                    if i + 1 < n and not line[i + 1].isspace():
                        raise ParseError("closing quote must be followed by a space")
                    done = True
                else:
                    cur += c.encode("utf-8")
            elif insq:
                if i >= n:
                    raise ParseError("unterminated single quote")
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] == "'":
                    i += 1
                    cur += b"'"
                elif c == "'":
                    if i + 1 < n and not line[i + 1].isspace():
                        raise ParseError("closing quote must be followed by a space")
                    done = True
                else:
                    cur += c.encode("utf-8")
            else:
                if i >= n:
                    done = True
                    break
                c = line[i]
                if c.isspace():
                    done = True
                elif c == '"':
                    inq = True
                elif c == "'":
                    insq = True
                else:
                    cur += c.encode("utf-8")
            if i < n:
                i += 1
        args.append(bytes(cur))


def load_commands(path):
    """Return a list of (line_number, raw_line, [args])."""
    cmds = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            try:
                args = split_args(s)
            except ParseError as e:
                raise ParseError("%s:%d: %s" % (path, lineno, e))
            if args:
                cmds.append((lineno, s, args))
    return cmds


def encode_command(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, addr, timeout):
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("bad address %r (want host:port)" % addr)
        self.addr = addr
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.pos = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("%s closed the connection" % self.addr)
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def _line(self):
        while True:
            idx = self.buf.find(b"\r\n", self.pos)
            if idx >= 0:
                line = bytes(self.buf[self.pos:idx + 2])
                self.pos = idx + 2
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) - self.pos < n:
            self._fill()
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def _value(self, out):
        """Append the raw bytes of one complete RESP2/RESP3 value to out."""
        line = self._line()
        out += line
        t = line[:1]
        body = line[1:-2]
        if t in (b"+", b"-", b":", b"_", b",", b"#", b"("):
            return
        if t in (b"$", b"!", b"="):
            if body == b"?":
                raise ValueError("streamed strings are not supported")
            n = int(body)
            if n >= 0:
                data = self._exact(n + 2)
                if data[-2:] != b"\r\n":
                    raise ValueError("bad bulk terminator from %s" % self.addr)
                out += data
            return
        if t in (b"*", b"~", b">"):
            if body == b"?":
                raise ValueError("streamed aggregates are not supported")
            n = int(body)
            for _ in range(max(n, 0)):
                self._value(out)
            return
        if t == b"%":
            n = int(body)
            for _ in range(2 * n):
                self._value(out)
            return
        if t == b"|":
            # attribute map, followed by the value it is attached to
            n = int(body)
            for _ in range(2 * n):
                self._value(out)
            self._value(out)
            return
        raise ValueError("unknown RESP type byte %r from %s" % (t, self.addr))

    def read_reply(self):
        """Raw bytes of one reply. Out-of-band push messages ('>') that arrive
        before the reply are included in front of it, so they get compared too."""
        out = bytearray()
        while True:
            start = len(out)
            self._value(out)
            if out[start:start + 1] != b">":
                return bytes(out)

    def call(self, args):
        self.sock.sendall(encode_command(args))
        return self.read_reply()


def show(b, limit=2000):
    r = repr(b)
    return r if len(r) <= limit else r[:limit] + "...(%d bytes)" % len(b)


def run_pass(conns, cmds, label, errors):
    for lineno, text, args in cmds:
        replies = [c.call(args) for c in conns]
        if replies[0] != replies[1]:
            print("MISMATCH (%s) at line %d: %s" % (label, lineno, text))
            print("  %s: %s" % (conns[0].addr, show(replies[0])))
            print("  %s: %s" % (conns[1].addr, show(replies[1])))
            return False
        if errors is not None and replies[0][:1] in (b"-", b"!"):
            errors.append((label, lineno, text, replies[0]))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("addr_a", help="host:port of the first server")
    ap.add_argument("addr_b", help="host:port of the second server")
    ap.add_argument("listfile", help="command list, e.g. tests/data/differential.redis")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="socket timeout in seconds (default 10)")
    ap.add_argument("--show-errors", action="store_true",
                    help="also list every top-level error reply (to audit intended errors)")
    opts = ap.parse_args()

    try:
        cmds = load_commands(opts.listfile)
    except (OSError, ParseError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    if not cmds:
        print("error: no commands in %s" % opts.listfile, file=sys.stderr)
        return 2

    errors = [] if opts.show_errors else None
    conns = []
    try:
        conns = [Conn(opts.addr_a, opts.timeout), Conn(opts.addr_b, opts.timeout)]
        if not run_pass(conns, cmds, "RESP2", errors):
            return 1
        for c in conns:
            c.call([b"FLUSHALL"])
            c.call([b"HELLO", b"3"])  # reply not compared
        if not run_pass(conns, cmds, "RESP3", errors):
            return 1
    except (OSError, ValueError, ConnectionError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    finally:
        for c in conns:
            c.close()

    if errors is not None:
        for label, lineno, text, reply in errors:
            print("error reply (%s) line %d: %s -> %s" % (label, lineno, text, show(reply, 300)))
    print("%d commands identical in RESP2 and RESP3" % len(cmds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
