#!/usr/bin/env python3
"""Sorts a proxy's sampled CPU time by what it was doing, from `perf script` output.

Reads `perf script -F period,ip,sym,dso` (samples of `perf record -e cpu-clock -g`) on
stdin and prints one CSV line:

    load,target,requests,total,user,preempted,sleeping,waking,kernel,top

- total: the CPU seconds the samples stand for, per 100k requests;
- user: the share, in percent, of samples whose innermost frame is in user space (the
  proxy's own code, its libraries, the vDSO);
- preempted: in the kernel, switching away from the proxy while it still had work: the
  scheduler called on the way back from a system call or an interrupt (another process
  woken by the proxy's write, or the tick, took the CPU);
- sleeping: in the kernel, switching away because the proxy waits (epoll_wait, a futex);
- waking: in the kernel, waking another thread or process: the reader of a socket the proxy
  wrote to, or a thread of its own;
- kernel: the rest of the kernel: system calls, TCP/IP on loopback, copies;
- top: the three user-space functions with the most samples, with their shares of the
  total, as "name pct" separated by " | ".

Usage: perf script ... | stacks.py LOAD TARGET REQUESTS
"""

import sys
from collections import Counter

KERNEL = "[kernel.kallsyms]"
SWITCH = "__schedule"
# Returning to user space, or from an interrupt, with a reschedule pending: preempted.
PREEMPT = ("exit_to_user_mode_loop", "irqentry_exit", "preempt_schedule")
WAKE = ("try_to_wake_up", "sock_def_readable", "__wake_up_common", "futex_wake", "ep_poll_callback")


def samples(lines):
    """(period, [(sym, dso), ...] innermost first) for each sample."""
    period, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if period is not None:
                yield period, frames
            period, frames = None, []
        elif not line.startswith("\t") and period is None:
            period = int(line.split()[0])
        else:
            parts = line.strip().split(" ", 1)
            rest = parts[1] if len(parts) > 1 else "[unknown] ([unknown])"
            sym, _, dso = rest.rpartition(" (")
            frames.append((sym, dso.rstrip(")")))
    if period is not None:
        yield period, frames


def short(sym):
    """A Rust path's last two segments, closures and generics folded."""
    sym = sym.replace("::{{closure}}", "").split("<", 1)[0] or sym
    parts = [p for p in sym.split("::") if p]
    return "::".join(parts[-2:]) if parts else sym


def main():
    load, target, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kinds = Counter()
    funcs = Counter()
    for period, frames in samples(sys.stdin):
        if not frames:
            continue
        leaf_sym, leaf_dso = frames[0]
        names = {sym for sym, _ in frames}
        if leaf_dso != KERNEL:
            kinds["user"] += period
            funcs[short(leaf_sym)] += period
        elif SWITCH in names:
            preempted = any(p in sym for sym in names for p in PREEMPT)
            kinds["preempted" if preempted else "sleeping"] += period
        elif any(w in names for w in WAKE):
            kinds["waking"] += period
        else:
            kinds["kernel"] += period
    total = sum(kinds.values())
    if total == 0:
        sys.exit(f"stacks.py: no samples for {target} ({load})")

    def pct(n):
        return f"{100 * n / total:.0f}"

    top = " | ".join(f"{name} {pct(n)}" for name, n in funcs.most_common(3))
    per_100k = total / 1e9 / requests * 100_000
    row = [load, target, str(requests), f"{per_100k:.3f}"]
    row += [pct(kinds[k]) for k in ("user", "preempted", "sleeping", "waking", "kernel")]
    row.append(top.replace(",", ";"))
    print(",".join(row))


if __name__ == "__main__":
    main()
