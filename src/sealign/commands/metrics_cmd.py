"""List the registered metrics, what each needs (reference, text, speaker reference) and which
run on a GPU (their constructor takes a ``device``)."""

from __future__ import annotations

import argparse

from sealign.metrics.registry import metric_info, metric_names, takes_device

HELP = "list available metrics and their requirements"


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p


def run(args: argparse.Namespace) -> int:
    del args
    print("| metric | outputs | better | needs | rate | GPU | description |")
    print("|---|---|---|---|---|---|---|")
    for name in metric_names():
        try:
            i = metric_info(name)
        except Exception as err:  # noqa: BLE001 - a backend whose package is missing still lists
            print(f"| {name} | ? | ? | ? | ? | ? | unavailable: {err} |")
            continue
        needs = [
            k
            for k, v in (
                ("reference", i.needs_reference),
                ("text", i.needs_text),
                ("speaker_ref", i.needs_speaker_ref),
            )
            if v
        ] or ["-"]
        better = ",".join("↑" if h else "↓" for h in i.higher_is_better)
        gpu = "yes" if takes_device(name) else "-"
        print(
            f"| {name} | {', '.join(i.outputs)} | {better} | {', '.join(needs)} | {i.sample_rate} "
            f"| {gpu} | {i.description} |"
        )
    return 0
