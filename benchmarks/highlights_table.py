"""One markdown table of PSNR per clip from several ``highlights.py`` JSON files (the mean over
each clip's predicted frames, black-subtracted), one column per method and model: how the
leave-one-camera-out tables in the README were made.

    python benchmarks/highlights_table.py a.json b.json ... [--inside]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def column(label: str) -> str:
    """A method label without the weights' folder, suffix or the fusion's name."""
    model, _, rest = label.partition(" ")
    return f"{Path(model).stem} {rest}".replace(" key-fusion", "").strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", type=Path)
    ap.add_argument("--inside", action="store_true", help="PSNR inside the clipped regions instead")
    args = ap.parse_args()
    rows: dict[str, dict[str, float | None]] = {}
    for path in args.json:
        for clip in json.loads(path.read_text())["clips"]:
            row = rows.setdefault(clip["clip"], {})
            for label, r in clip["methods"].items():
                row[column(label)] = r["inside"] if args.inside else r["psnr_black_mean_of_frames"]
    cols = sorted({c for r in rows.values() for c in r}, key=lambda c: (c != "global-fit", "refined" in c, c))
    print("| clip | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for clip, r in rows.items():
        print(f"| {clip} | " + " | ".join("-" if r.get(c) is None else f"{r[c]:.2f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
