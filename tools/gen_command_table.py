#!/usr/bin/env python3
"""Generate shardis's Redis command table (src/command/table.rs) from a live redis-server.

The script connects to an already running Redis 7 server (it never starts one), sends
`COMMAND` and `INFO server` over a plain socket speaking RESP2, and turns the reply into a
Rust `static COMMANDS: &[CommandSpec]` as defined in src/command/spec.rs: one entry per
top-level command and per subcommand (`object|encoding`), with its arity, the flags shardis
cares about and the command's key specs. Entries are sorted by the byte order of their
lower-case name, which is the order of Rust's `str`, so the proxy can binary-search them.

Key specs that Redis itself reports as `unknown` (their keys cannot be located from the
arguments alone, e.g. SORT's BY/GET patterns and its STORE keyword) are left out; a warning
is printed on stderr and the affected commands are listed in a comment in the output.

The output is already formatted the way rustfmt would format it, so
`rustfmt --edition 2021 --check src/command/table.rs` passes on a freshly generated file.

Only the Python 3.11 standard library is used.

To regenerate the table:

    redis-server --port 0 --unixsocket /tmp/x.sock --daemonize yes --save ''
    python3 tools/gen_command_table.py --socket /tmp/x.sock --out src/command/table.rs
    redis-cli -s /tmp/x.sock shutdown nosave

then review the diff (`git diff src/command/table.rs`). A TCP server works too:
`--host 127.0.0.1 --port 6379` (the default when --socket is not given).
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
from typing import BinaryIO, Union

# --------------------------------------------------------------------------------------------
# RESP2 client
# --------------------------------------------------------------------------------------------

Reply = Union[str, int, None, list["Reply"]]


class ProtocolError(Exception):
    """The server sent something that is not valid RESP2."""


class ServerError(Exception):
    """The server answered with an error reply (`-ERR ...`)."""


def encode_command(*args: str) -> bytes:
    """Encode a command as a RESP2 array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_line(stream: BinaryIO) -> bytes:
    line = stream.readline()
    if not line:
        raise ProtocolError("connection closed by the server")
    if not line.endswith(b"\r\n"):
        raise ProtocolError(f"line not terminated by CRLF: {line!r}")
    return line[:-2]


def _parse_int(data: bytes) -> int:
    try:
        return int(data)
    except ValueError:
        raise ProtocolError(f"bad integer: {data!r}") from None


def read_reply(stream: BinaryIO) -> Reply:
    """Read one RESP2 reply.

    Simple and bulk strings become `str` (UTF-8, undecodable bytes replaced), integers `int`,
    null bulk strings and null arrays `None`, arrays `list`. An error reply raises
    `ServerError`.
    """
    line = _read_line(stream)
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode("utf-8", "replace")
    if kind == b"-":
        raise ServerError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return _parse_int(rest)
    if kind == b"$":
        length = _parse_int(rest)
        if length == -1:
            return None
        if length < 0:
            raise ProtocolError(f"bad bulk string length: {length}")
        data = stream.read(length + 2)
        if len(data) != length + 2:
            raise ProtocolError("connection closed in the middle of a bulk string")
        if data[-2:] != b"\r\n":
            raise ProtocolError("bulk string not terminated by CRLF")
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        count = _parse_int(rest)
        if count == -1:
            return None
        if count < 0:
            raise ProtocolError(f"bad array length: {count}")
        return [read_reply(stream) for _ in range(count)]
    raise ProtocolError(f"unknown reply type: {line!r}")


class Connection:
    """A minimal blocking RESP2 connection: send a command, read its reply."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._stream = sock.makefile("rb")

    @classmethod
    def open(cls, host: str, port: int, unix_socket: str | None, timeout: float) -> Connection:
        if unix_socket is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(unix_socket)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((host, port), timeout=timeout)
        return cls(sock)

    def call(self, *args: str) -> Reply:
        self._sock.sendall(encode_command(*args))
        return read_reply(self._stream)

    def close(self) -> None:
        self._stream.close()
        self._sock.close()


# --------------------------------------------------------------------------------------------
# COMMAND reply -> command entries
# --------------------------------------------------------------------------------------------

# Redis flag name -> constant in src/command/spec.rs, in the constants' bit order (which is
# also the order the generated `flags:` expressions use).
FLAG_CONSTANTS: dict[str, str] = {
    "write": "WRITE",
    "readonly": "READONLY",
    "admin": "ADMIN",
    "blocking": "BLOCKING",
    "pubsub": "PUBSUB",
    "noscript": "NOSCRIPT",
    "movablekeys": "MOVABLEKEYS",
    "fast": "FAST",
    "denyoom": "DENYOOM",
    "loading": "LOADING",
    "stale": "STALE",
    "no_auth": "NO_AUTH",
}
CONTAINER = "CONTAINER"
CONSTANT_ORDER = [*FLAG_CONSTANTS.values(), CONTAINER]

# Positions in one COMMAND / COMMAND INFO entry (0-based), Redis 7 layout.
INFO_NAME, INFO_ARITY, INFO_FLAGS, INFO_KEY_SPECS, INFO_SUBCOMMANDS = 0, 1, 2, 8, 9

I16 = (-(2**15), 2**15 - 1)
U16 = (0, 2**16 - 1)


class FormatError(Exception):
    """The COMMAND reply does not have the expected Redis 7 shape."""


@dataclasses.dataclass(frozen=True)
class IndexBegin:
    index: int


@dataclasses.dataclass(frozen=True)
class KeywordBegin:
    keyword: str
    start_from: int


@dataclasses.dataclass(frozen=True)
class RangeFind:
    last_key: int
    step: int
    limit: int


@dataclasses.dataclass(frozen=True)
class KeyNumFind:
    key_num_idx: int
    first_key: int
    step: int


@dataclasses.dataclass(frozen=True)
class KeySpec:
    begin: IndexBegin | KeywordBegin
    find: RangeFind | KeyNumFind
    not_key: bool
    incomplete: bool


@dataclasses.dataclass
class Command:
    name: str
    arity: int
    flags: list[str]  # constant names, in CONSTANT_ORDER
    keys: list[KeySpec]
    unknown_specs: int = 0  # key specs left out because Redis reports them as `unknown`


def pairs_to_dict(reply: Reply, what: str) -> dict[str, Reply]:
    """Turn a RESP2 flattened map (`[k1, v1, k2, v2, ...]`) into a dict."""
    if not isinstance(reply, list) or len(reply) % 2 != 0:
        raise FormatError(f"{what}: expected a flat key/value array, got {reply!r}")
    result: dict[str, Reply] = {}
    for key, value in zip(reply[0::2], reply[1::2]):
        if not isinstance(key, str):
            raise FormatError(f"{what}: non-string map key {key!r}")
        result[key] = value
    return result


def get_int(fields: dict[str, Reply], key: str, bounds: tuple[int, int], what: str) -> int:
    value = fields.get(key)
    if not isinstance(value, int):
        raise FormatError(f"{what}: missing or non-integer {key!r} in {fields!r}")
    low, high = bounds
    if not low <= value <= high:
        raise FormatError(f"{what}: {key}={value} does not fit in [{low}, {high}]")
    return value


def parse_begin_search(reply: Reply, what: str) -> IndexBegin | KeywordBegin | None:
    fields = pairs_to_dict(reply, what)
    kind = fields.get("type")
    spec = pairs_to_dict(fields.get("spec"), what)
    if kind == "index":
        return IndexBegin(get_int(spec, "index", U16, what))
    if kind == "keyword":
        keyword = spec.get("keyword")
        if not isinstance(keyword, str) or not keyword.isascii() or not keyword.isprintable():
            raise FormatError(f"{what}: bad keyword {keyword!r}")
        return KeywordBegin(keyword, get_int(spec, "startfrom", I16, what))
    if kind == "unknown":
        return None
    raise FormatError(f"{what}: unsupported begin_search type {kind!r}")


def parse_find_keys(reply: Reply, what: str) -> RangeFind | KeyNumFind | None:
    fields = pairs_to_dict(reply, what)
    kind = fields.get("type")
    spec = pairs_to_dict(fields.get("spec"), what)
    if kind == "range":
        return RangeFind(
            last_key=get_int(spec, "lastkey", I16, what),
            step=get_int(spec, "keystep", U16, what),
            limit=get_int(spec, "limit", U16, what),
        )
    if kind == "keynum":
        return KeyNumFind(
            key_num_idx=get_int(spec, "keynumidx", U16, what),
            first_key=get_int(spec, "firstkey", U16, what),
            step=get_int(spec, "keystep", U16, what),
        )
    if kind == "unknown":
        return None
    raise FormatError(f"{what}: unsupported find_keys type {kind!r}")


def parse_key_spec(reply: Reply, what: str) -> KeySpec | None:
    """Parse one key spec; None when Redis reports its begin_search or find_keys as unknown."""
    fields = pairs_to_dict(reply, what)
    spec_flags = fields.get("flags", [])
    if not isinstance(spec_flags, list):
        raise FormatError(f"{what}: key spec flags are not an array: {spec_flags!r}")
    begin = parse_begin_search(fields.get("begin_search"), what + " begin_search")
    find = parse_find_keys(fields.get("find_keys"), what + " find_keys")
    if begin is None or find is None:
        return None
    return KeySpec(
        begin=begin,
        find=find,
        not_key="not_key" in spec_flags,
        incomplete="incomplete" in spec_flags,
    )


def parse_command(entry: Reply, out: list[Command]) -> None:
    """Append the command described by one COMMAND entry, then its subcommands, to `out`."""
    if not isinstance(entry, list) or len(entry) <= INFO_SUBCOMMANDS:
        raise FormatError(
            f"COMMAND entry without key specs/subcommands (not Redis 7+?): {entry!r}"
        )
    name, arity, redis_flags = entry[INFO_NAME], entry[INFO_ARITY], entry[INFO_FLAGS]
    key_specs, subcommands = entry[INFO_KEY_SPECS], entry[INFO_SUBCOMMANDS]
    if not isinstance(name, str) or not name:
        raise FormatError(f"bad command name: {name!r}")
    name = name.lower()
    if not isinstance(arity, int) or not I16[0] <= arity <= I16[1]:
        raise FormatError(f"{name}: bad arity {arity!r}")
    if not all(isinstance(x, list) for x in (redis_flags, key_specs, subcommands)):
        raise FormatError(f"{name}: flags, key specs and subcommands must be arrays")

    constants = {FLAG_CONSTANTS[f] for f in redis_flags if f in FLAG_CONSTANTS}
    if subcommands:
        constants.add(CONTAINER)
    command = Command(
        name=name,
        arity=arity,
        flags=[c for c in CONSTANT_ORDER if c in constants],
        keys=[],
    )
    for position, raw_spec in enumerate(key_specs):
        spec = parse_key_spec(raw_spec, f"{name} key spec #{position}")
        if spec is None:
            command.unknown_specs += 1
            print(
                f"warning: {name}: key spec #{position} has an unknown begin_search or "
                "find_keys; left out of the table",
                file=sys.stderr,
            )
        else:
            command.keys.append(spec)
    out.append(command)
    for sub in subcommands:
        parse_command(sub, out)


def sort_key(command: Command) -> bytes:
    # Rust's `str` Ord compares UTF-8 bytes; sort the same way.
    return command.name.encode()


def build_table(command_reply: Reply) -> list[Command]:
    if not isinstance(command_reply, list):
        raise FormatError(f"COMMAND reply is not an array: {command_reply!r}")
    commands: list[Command] = []
    for entry in command_reply:
        parse_command(entry, commands)
    commands.sort(key=sort_key)
    for previous, current in zip(commands, commands[1:]):
        if previous.name == current.name:
            raise FormatError(f"duplicate command name: {current.name}")
    return commands


def server_version(info_reply: Reply) -> str:
    if isinstance(info_reply, str):
        for line in info_reply.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
    raise FormatError("INFO server did not report redis_version")


# --------------------------------------------------------------------------------------------
# Rust output (laid out exactly as rustfmt 2021 lays it out, so --check passes)
# --------------------------------------------------------------------------------------------

INDENT = "    "
MAX_COMMENT_WIDTH = 100


def rust_str(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def rust_bool(value: bool) -> str:
    return "true" if value else "false"


def struct_lines(head: str, fields: list[tuple[str, str | list[str]]], depth: int) -> list[str]:
    """A struct literal laid out vertically, `head {` at `depth`.

    A field value is either a one-line expression or the lines of a nested literal whose first
    line continues the `field: ` line and whose other lines are already indented.
    """
    pad = INDENT * (depth + 1)
    lines = [f"{head} {{"]
    for field, value in fields:
        if isinstance(value, str):
            lines.append(f"{pad}{field}: {value},")
        else:
            lines.append(f"{pad}{field}: {value[0]}")
            lines.extend(value[1:-1])
            lines.append(value[-1] + ",")
    lines.append(INDENT * depth + "}")
    return lines


def begin_value(begin: IndexBegin | KeywordBegin, depth: int) -> str | list[str]:
    if isinstance(begin, IndexBegin):
        return f"BeginSearch::Index({begin.index})"
    return struct_lines(
        "BeginSearch::Keyword",
        [("keyword", rust_str(begin.keyword)), ("start_from", str(begin.start_from))],
        depth,
    )


def find_value(find: RangeFind | KeyNumFind, depth: int) -> list[str]:
    if isinstance(find, RangeFind):
        fields = [
            ("last_key", str(find.last_key)),
            ("step", str(find.step)),
            ("limit", str(find.limit)),
        ]
        return struct_lines("FindKeys::Range", fields, depth)
    fields = [
        ("key_num_idx", str(find.key_num_idx)),
        ("first_key", str(find.first_key)),
        ("step", str(find.step)),
    ]
    return struct_lines("FindKeys::KeyNum", fields, depth)


def key_spec_lines(spec: KeySpec, head: str, depth: int) -> list[str]:
    inner = depth + 1
    return struct_lines(
        head,
        [
            ("begin", begin_value(spec.begin, inner)),
            ("find", find_value(spec.find, inner)),
            ("not_key", rust_bool(spec.not_key)),
            ("incomplete", rust_bool(spec.incomplete)),
        ],
        depth,
    )


def keys_value(keys: list[KeySpec], depth: int) -> str | list[str]:
    """The `keys:` value of a CommandSpec whose fields are at `depth`."""
    if not keys:
        return "&[]"
    if len(keys) == 1:
        # rustfmt hugs a lone struct literal: `&[KeySpec { ... }]`.
        lines = key_spec_lines(keys[0], "&[KeySpec", depth)
        return lines[:-1] + [lines[-1] + "]"]
    lines = ["&["]
    for spec in keys:
        spec_lines = key_spec_lines(spec, INDENT * (depth + 1) + "KeySpec", depth + 1)
        lines.extend(spec_lines[:-1])
        lines.append(spec_lines[-1] + ",")
    lines.append(INDENT * depth + "]")
    return lines


def command_lines(command: Command) -> list[str]:
    flags = " | ".join(command.flags) if command.flags else "0"
    lines = struct_lines(
        INDENT + "CommandSpec",
        [
            ("name", rust_str(command.name)),
            ("arity", str(command.arity)),
            ("flags", flags),
            ("keys", keys_value(command.keys, 2)),
        ],
        1,
    )
    lines[-1] += ","
    for line in lines:
        if len(line) > MAX_COMMENT_WIDTH:
            # rustfmt would break such a line differently; better to fail than to drift.
            raise FormatError(f"{command.name}: generated line too long for rustfmt: {line}")
    return lines


def wrapped_comment(words: list[str], prefix: str) -> list[str]:
    lines: list[str] = []
    current = prefix.rstrip()
    for word in words:
        if len(current) + 1 + len(word) > MAX_COMMENT_WIDTH and current != prefix.rstrip():
            lines.append(current)
            current = prefix.rstrip()
        current += " " + word
    lines.append(current)
    return lines


def render(commands: list[Command], version: str) -> str:
    out = [
        "//! The Redis 7 command table: arity, flags and key specs of every command and "
        "subcommand.",
        "//!",
        f"//! Generated by `tools/gen_command_table.py` from redis-server {version}; "
        "do not edit by hand,",
        "//! regenerate (see the script's --help) and review the diff.",
        "",
        "use super::spec::flags::*;",
        "use super::spec::{BeginSearch, CommandSpec, FindKeys, KeySpec};",
        "",
    ]
    partial = [c.name for c in commands if c.unknown_specs]
    if partial:
        out += wrapped_comment(
            "Key specs that redis-server reports as `unknown` (keys that cannot be located "
            "from the arguments alone) are left out, so the `keys` of these commands may not "
            "name all of their keys:".split(),
            "//",
        )
        out += wrapped_comment([n + "," for n in partial[:-1]] + [partial[-1] + "."], "//")
        out.append("")
    out += [
        "/// Every command, sorted by name (byte order) for binary search.",
        "pub static COMMANDS: &[CommandSpec] = &[",
    ]
    for command in commands:
        out += command_lines(command)
    out.append("];")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate src/command/table.rs from a running Redis 7 server "
        "(the script does not start one).",
        epilog="Example: python3 tools/gen_command_table.py --socket /tmp/x.sock "
        "--out src/command/table.rs",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server host (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=6379, help="server port (default: %(default)s)"
    )
    parser.add_argument("--socket", metavar="PATH", help="connect to this Unix socket instead")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="socket timeout in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="write the Rust source here instead of stdout"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        conn = Connection.open(args.host, args.port, args.socket, args.timeout)
    except OSError as err:
        target = args.socket or f"{args.host}:{args.port}"
        print(f"error: cannot connect to {target}: {err}", file=sys.stderr)
        return 1
    try:
        version = server_version(conn.call("INFO", "server"))
        command_reply = conn.call("COMMAND")
        count = conn.call("COMMAND", "COUNT")
        commands = build_table(command_reply)
    except (OSError, ProtocolError, ServerError, FormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        conn.close()

    top_level = len(command_reply) if isinstance(command_reply, list) else 0
    if top_level != count:
        print(
            f"error: COMMAND returned {top_level} commands, COMMAND COUNT says {count}",
            file=sys.stderr,
        )
        return 1
    try:
        source = render(commands, version)
    except FormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="\n") as file:
            file.write(source)
    else:
        sys.stdout.write(source)
    print(
        f"{top_level} commands, {len(commands) - top_level} subcommands, "
        f"{len(commands)} entries (redis-server {version})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
