"""`make bench`: every benchmark in bench/, one after another, each printing its own table.

    .venv/bin/python bench/run_all.py           # the sizes the issues name (takes a while)
    .venv/bin/python bench/run_all.py --quick   # small sizes, a few minutes, for a sanity check

Quote medians of several runs: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = [
    ["fakeplex_throughput.py", "--client", "aiohttp"],
    ["catalog_ingest.py"],
    ["scan.py", "--sizes", "2"],
    ["scale_out.py"],
]
QUICK = [
    ["fakeplex_throughput.py", "--client", "aiohttp", "--seconds", "2", "--runs", "1"],
    ["catalog_ingest.py", "--items", "5000", "--baseline-items", "1000"],
    ["scan.py", "--movies", "1000", "--shows", "10"],
    ["scale_out.py", "--quick"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args()
    failed = 0
    for command in QUICK if args.quick else FULL:
        print(f"\n$ python bench/{' '.join(command)}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / command[0]), *command[1:]]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
