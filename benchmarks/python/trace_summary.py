#!/usr/bin/env python3
"""Self time per operator of a Chrome trace written by bench_train_step --profile or train_step_peer.py --profile.

    .venv/bin/python benchmarks/python/trace_summary.py out/bench/zd.json out/bench/py.json [--top 25]

Each trace's complete events ("ph": "X", or "B"/"E" pairs) are nested per thread by time; an event's self time is
its duration minus that of the events directly inside it. The table lists, per operator name, the self time summed
over the trace (ms) and its share of the trace's total self time, for each trace side by side, sorted by the first
trace's figure. Names are ATen's (aten::addmm, aten::native_group_norm_backward, ...) on both sides, so the rows
line up; autograd nodes (e.g. "AddmmBackward0") and Python frames are kept as they come.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys


def self_times(path: str) -> dict[str, float]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    spans = collections.defaultdict(list)  # thread -> [(start, end, name)]
    open_b = collections.defaultdict(list)
    for e in events:
        ph = e.get("ph")
        if e.get("cat") in ("python_function", "user_annotation", "gpu_user_annotation", "Trace"):
            continue
        key = (e.get("pid"), e.get("tid"))
        if ph == "X" and "dur" in e:
            spans[key].append((float(e["ts"]), float(e["ts"]) + float(e["dur"]), e.get("name", "?")))
        elif ph == "B":
            open_b[key].append(e)
        elif ph == "E" and open_b[key]:
            b = open_b[key].pop()
            spans[key].append((float(b["ts"]), float(e["ts"]), b.get("name", "?")))
    out: dict[str, float] = collections.defaultdict(float)
    for items in spans.values():
        items.sort(key=lambda s: (s[0], -s[1]))
        stack: list[list] = []  # [end, name, self]
        def close(entry):
            out[entry[1]] += entry[2]
        for start, end, name in items:
            while stack and start >= stack[-1][0]:
                close(stack.pop())
            if stack:
                stack[-1][2] -= min(end, stack[-1][0]) - start
            stack.append([end, name, end - start])
        while stack:
            close(stack.pop())
    return {k: v / 1000.0 for k, v in out.items()}  # us -> ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    tables = [self_times(p) for p in a.traces]
    totals = [sum(t.values()) for t in tables]
    names = sorted(tables[0], key=lambda n: -tables[0][n])[: a.top]
    for extra in tables[1:]:
        names += [n for n in sorted(extra, key=lambda n: -extra[n])[: a.top // 2] if n not in names]
    print("| operator | " + " | ".join(f"{p} ms | %" for p in a.traces) + " |")
    print("|---|" + "---|---|" * len(a.traces))
    for n in names:
        cells = " | ".join(f"{t.get(n, 0.0):.1f} | {100 * t.get(n, 0.0) / max(tot, 1e-9):.1f}" for t, tot in zip(tables, totals))
        print(f"| {n} | {cells} |")
    print("| total self time | " + " | ".join(f"{tot:.1f} | 100" for tot in totals) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
