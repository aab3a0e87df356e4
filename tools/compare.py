#!/usr/bin/env python3
"""Compare two benchmark JSON files (tools/bench_torch.py or `oscar-wgpu bench --json`) side by side.

    python tools/compare.py torch.json wgpu.json

One row per (size, level, stage) found in either file: both medians in ms and the ratio b/a
(below 1: b is faster). A stage only one side measures (e.g. range_encode) shows "-" for the other.
Where a file says its machine was not steady (`oscar-wgpu bench`'s machine_drift: its own probes,
taken before, between and after the runs, spread by more than 5 %), a warning says so on stderr.
"""

import argparse
import json
import sys

# Probe drift past which a file's numbers compare poorly (as `oscar-wgpu bench` warns).
STEADY = 0.05
KEYS = ("adapter", "backend", "driver", "precision", "version", "size", "level", "stage", "median_ms", "min_ms",
        "max_ms", "gflops", "peak_fraction", "peak_memory_bytes")
ORDER = ["vae_encode", "hyper_encode", "vq", "range_encode", "encode_total",
         "range_decode", "hyper_decode", "unet", "vae_decode", "decode_total"]


class CompareError(Exception):
    pass


def load(path):
    """{(size, level, stage): record} and a one-line description of the file."""
    try:
        with open(path) as f:
            recs = json.load(f)
    except OSError as e:
        raise CompareError(f"cannot read {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CompareError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(recs, list) or not recs or not all(isinstance(r, dict) for r in recs):
        raise CompareError(f"{path} must hold a non-empty list of benchmark records")
    out = {}
    for r in recs:
        missing = [k for k in KEYS if k not in r]
        if missing:
            raise CompareError(f"{path}: a record lacks {missing}")
        key = (r["size"], r["level"], r["stage"])
        if key in out:
            raise CompareError(f"{path} has two records for size {key[0]} level {key[1]} stage {key[2]} "
                               "(one backend and precision per file)")
        out[key] = r
    r = recs[0]
    kernels = f", {r['kernels']} kernels" if "kernels" in r else ""
    return out, f"{r['backend']} {r['precision']} on {r['adapter']} ({r['driver']}{kernels})"


def sort_key(key):
    size, level, stage = key
    rank = ORDER.index(stage) if stage in ORDER else len(ORDER)
    return (size, -1 if level is None else level, rank, stage)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="baseline JSON")
    ap.add_argument("b", help="JSON to compare with it")
    args = ap.parse_args(argv)
    try:
        a, da = load(args.a)
        b, db = load(args.b)
    except CompareError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    print(f"a: {da}\nb: {db}")
    for name, recs in (("a", a), ("b", b)):
        drift = max((r.get("machine_drift", 0.0) for r in recs.values()), default=0.0)
        if drift > STEADY:
            print(f"compare: warning: {name}'s probes moved by {100 * drift:.1f} % during its runs: "
                  "its machine was not steady", file=sys.stderr)
    print(f"{'size':>5} {'level':>5}  {'stage':<13} {'a_ms':>10} {'b_ms':>10} {'b/a':>7}")
    for key in sorted(set(a) | set(b), key=sort_key):
        ma, mb = (x[key]["median_ms"] if key in x else None for x in (a, b))
        ratio = f"{mb / ma:7.3f}" if ma and mb is not None else f"{'-':>7}"
        cell = lambda m: f"{m:10.2f}" if m is not None else f"{'-':>10}"  # noqa: E731
        print(f"{key[0]:>5} {str(key[1]):>5}  {key[2]:<13} {cell(ma)} {cell(mb)} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
