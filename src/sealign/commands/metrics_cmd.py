"""List the registered metrics, what each needs (reference, text, speaker reference), which
run on a GPU (their constructor takes a ``device``) and which need weights you provide."""

from __future__ import annotations

import argparse
import importlib.util
import os

from sealign.metrics.registry import metric_class, metric_info, metric_names, takes_device

HELP = "list available metrics and their requirements"


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p


def _weights(name: str, option: str, packages: tuple[str, ...] = (), install: str = "") -> str:
    """Where the metric's model comes from: installed with it, or the option (and environment
    variable) through which you give it, with whether that variable is set here; packages it
    needs that are missing come first."""
    missing = [m for m in packages if importlib.util.find_spec(m) is None]
    if missing:
        return f"missing Python package {', '.join(missing)}: {install}"
    if not option:
        return "installed"
    where = f"you give: metric_options.{name}.{option}"
    env = getattr(metric_class(name), "weights_env", None)
    if env:
        where += f" or ${env} ({'set' if os.environ.get(env) else 'not set'})"
    return where


def run(args: argparse.Namespace) -> int:
    del args
    print("| metric | outputs | better | needs | rate | GPU | weights | description |")
    print("|---|---|---|---|---|---|---|---|")
    for name in metric_names():
        try:
            i = metric_info(name)
        except Exception as err:  # noqa: BLE001 - a backend whose package is missing still lists
            print(f"| {name} | ? | ? | ? | ? | ? | ? | unavailable: {err} |")
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
            f"| {gpu} | {_weights(name, i.user_weights, i.packages, i.install)} | {i.description} |"
        )
    return 0
