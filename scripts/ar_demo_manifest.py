"""Write data/sft_clean/train_ar_demo.jsonl, the extra clean speech of the shipped checkpoints.

    .venv/bin/python scripts/ar_demo_manifest.py [--corpus DIR] [--demo DIR] [--all]

Reads the clean corpus made by `sealign data synth` (see docs/demo_checkpoint.md), keeps the
utterances listed in configs/ar_demo_extra_ids.txt (``--all``: every train utterance, written to
train_more.jsonl), and drops any whose speaker or sentence occurs in the demo valid/test splits
(so the checkpoint never hears a held-out voice or text).
Ids get the prefix `sftclean-` so they cannot collide with the demo corpus's ids.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="data/sft_clean")
    p.add_argument("--demo", default="data/demo")
    p.add_argument("--all", action="store_true", help="keep every train utterance, not the list")
    args = p.parse_args()
    corpus, demo = Path(args.corpus), Path(args.demo)
    wanted = set((ROOT / "configs" / "ar_demo_extra_ids.txt").read_text().split())
    held = []
    for split in ("valid", "test"):
        held += [
            json.loads(x) for x in (demo / "clean" / f"{split}.jsonl").read_text().splitlines()
        ]
    texts = {r["text"] for r in held}
    speakers = {r["speaker"] for r in held}
    rows = []
    for line in (corpus / "train.jsonl").read_text().splitlines():
        r = json.loads(line)
        if (
            (args.all or r["id"] in wanted)
            and r["text"] not in texts
            and r["speaker"] not in speakers
        ):
            r["id"] = "sftclean-" + r["id"].split("-", 1)[1]
            rows.append(r)
    out = corpus / ("train_more.jsonl" if args.all else "train_ar_demo.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{out}: {len(rows)} utterances" + ("" if args.all else f" ({len(wanted)} listed)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
