"""Runs every benchmarks/bench_*.py, each writing <name>.json into one report folder.

    python benchmarks/run_all.py [--out DIR] [any other flags, passed to every script]

e.g. `python benchmarks/run_all.py --out /tmp/report --device cuda`. Exits non-zero if
any benchmark failed; the others still run.
"""
import argparse
import datetime
import glob
import os
import subprocess
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "results", stamp),
                        help="report folder (default: benchmarks/results/<UTC time>)")
    args, passthrough = parser.parse_known_args()
    os.makedirs(args.out, exist_ok=True)

    failed = []
    for script in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
        name = os.path.splitext(os.path.basename(script))[0]
        print(f"== {name}", flush=True)
        cmd = [sys.executable, script, "--json", os.path.join(args.out, name + ".json"), *passthrough]
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(name)
    print(f"reports in {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
