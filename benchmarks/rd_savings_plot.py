"""The savings plot of ``rawvid bench --rd --plots`` from JSON already written (bench --rd or rd_targets.py).

    python benchmarks/rd_savings_plot.py benchmarks/results/rd_test_stable_session21.json \\
        -o benchmarks/results/rd_test_stable/savings.png [--codec rawvid-target]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rawvid.rd import plot_savings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--codec", default=None, help="only this curve's points (rd_targets.py writes several)")
    args = ap.parse_args()
    rows = [r for p in args.json for r in json.loads(p.read_text())["target_savings"]
            if args.codec is None or r["codec"] == args.codec]
    print(f"wrote {plot_savings(rows, args.output)} ({len(rows)} points)")


if __name__ == "__main__":
    main()
