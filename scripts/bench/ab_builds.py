"""Two builds of the same benchmark example, interleaved: A, B, A, B, ...

    python scripts/bench/ab_builds.py [--runs R] [--threads N] BIN_A BIN_B [ARGS...]

BIN_A and BIN_B are release builds of `examples/bench_transformer.rs`,
`examples/bench_attn.rs` or `examples/bench_vae.rs` (say, before and after a
change); both get ARGS (`bench_transformer`: a checkpoint folder and its
inputs file, as `bench_transformer.py` writes them; `bench_attn`: a sequence
length and a head count; `bench_vae`: its usage line; both builds write its
output file as they exit, so that file compares nothing). Both processes
start at once and stay up; each takes one warm-up run, then R runs in turn,
so that both see the same machine load.
Prints each build's min and median seconds and the ratio B / A. Needs only
the Python standard library.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("bins", nargs=2, metavar="BIN")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    procs = [
        subprocess.Popen([b, *a.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for b in a.bins
    ]

    def run(p):
        p.stdin.write("run\n")
        p.stdin.flush()
        # Other lines (bench_vae's resident memory once loaded) are skipped.
        while line := p.stdout.readline():
            if m := re.match(r"(?:rust_forward_s|run_s)=([0-9.]+)", line):
                return float(m.group(1))
        sys.exit(f"{p.args[0]} ended without a time")

    for p in procs:
        run(p)
    times = [[], []]
    for _ in range(a.runs):
        for p, t in zip(procs, times):
            t.append(run(p))
    for b, t in zip(a.bins, times):
        print(f"{b}: min {min(t):.4f} s, median {statistics.median(t):.4f} s")
    (ta, tb) = times
    print(f"B / A: min {min(tb) / min(ta):.3f}, median {statistics.median(tb) / statistics.median(ta):.3f}")
    for p in procs:
        p.stdin.close()
        p.wait()


if __name__ == "__main__":
    main()
