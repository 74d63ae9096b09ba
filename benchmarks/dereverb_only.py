"""Write a manifest's noisy inputs dereverberated by WPE alone (no model), as the AR and MGM
see them before their output masks them, so that they can be scored like any system.

    .venv/bin/python benchmarks/dereverb_only.py --manifest data/demo/test.jsonl --output /tmp/wpe
    sealign score --manifest /tmp/wpe/manifest.jsonl --metrics wer,dnsmos --output runs/score_wpe
    sealign score --manifest data/demo/test.jsonl --metrics wer,dnsmos --output runs/score_noisy
    sealign table runs/score_noisy runs/score_wpe --baseline score_noisy \\
        --by degradation.tasks --manifest data/demo/test.jsonl

Each input goes through ``sealign.infer.dereverb.dereverb_input`` (the ``dereverb: wpe`` step of
``enhance``) at 16 kHz; the manifest keeps every other field (reference, text, degradation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import soundfile as sf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--manifest", required=True, help="noisy inputs (audio) with their fields")
    p.add_argument("--output", required=True, help="folder for the wavs and manifest.jsonl")
    args = p.parse_args(argv)

    from sealign.audio.io import load_audio
    from sealign.data.manifest import read_manifest
    from sealign.infer.dereverb import dereverb_input

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in read_manifest(args.manifest):
        x, sr = load_audio(e.audio, 16000)
        path = (out / f"{e.id}.wav").resolve()
        sf.write(path, dereverb_input(x, sr, "wpe"), sr)
        row = e.to_json()
        row["audio"] = str(path)
        for key in ("reference", "speaker_ref"):
            if row.get(key):
                row[key] = str(Path(row[key]).resolve())
        lines.append(json.dumps(row))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} dereverberated inputs and {out / 'manifest.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
