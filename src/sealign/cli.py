"""The ``sealign`` command line: one sub-command per module under :mod:`sealign.commands`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from sealign import __version__
from sealign.codecs.base import CodecUnavailable
from sealign.commands import (
    check,
    codec,
    data,
    demo,
    dpo,
    enhance,
    export,
    gspo,
    listen,
    metrics_cmd,
    plot,
    pref_ablation,
    prefs,
    score,
    table,
    train,
)
from sealign.commands import eval as eval_cmd
from sealign.metrics.base import MetricUnavailable
from sealign.plugins import load_plugins
from sealign.utils.folder_lock import command_scope
from sealign.utils.logging import setup_console_logging

COMMANDS = {
    "demo": demo,
    "data": data,
    "codec": codec,
    "train": train,
    "gspo": gspo,
    "prefs": prefs,
    "dpo": dpo,
    "pref-ablation": pref_ablation,
    "enhance": enhance,
    "eval": eval_cmd,
    "listen": listen,
    "export": export,
    "score": score,
    "plot": plot,
    "table": table,
    "check": check,
    "metrics": metrics_cmd,
}

# the commands that split their work over torchrun's processes (see README, "On GPUs and
# several machines"); the others would each do the whole job and write the same files
TORCHRUN_COMMANDS = (
    "train", "gspo", "dpo", "prefs", "enhance", "eval", "score", "data synth", "data degrade",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sealign",
        description="Post-train generative speech-enhancement models on perceptual metrics.",
    )
    p.add_argument("--version", action="version", version=f"sealign {__version__}")
    p.add_argument("--log-level", default="INFO", help="console log level (default INFO)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in COMMANDS.items():
        sp = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run)
    return p


# a dotted config override, e.g. optim.lr=1e-5 or 'reward.components=[...]'
_OVERRIDE = re.compile(r"[A-Za-z_][\w.-]*=")


def parse_command_line(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """``parser.parse_args``, but KEY=VALUE overrides may sit anywhere among the options.

    argparse fills a ``nargs="*"`` positional from one run of tokens only, so overrides on both
    sides of an option (``--config c.yaml a=1 --output o b=2``) would be rejected; the later runs
    are appended in command-line order."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or not all(_OVERRIDE.match(t) for t in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_console_logging(args.log_level)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    name = " ".join(x for x in (args.command, getattr(args, "data_command", None)) if x)
    if world > 1 and name not in TORCHRUN_COMMANDS:
        logging.getLogger("sealign").error(
            "sealign %s runs as one process, not under torchrun (WORLD_SIZE=%d); these split "
            "their work over processes: %s", name, world, ", ".join(TORCHRUN_COMMANDS),
        )  # fmt: skip
        return 2
    try:
        load_plugins()
        with command_scope():  # releases the output folders the command held
            return int(args.func(args) or 0)
    except (
        ValueError,
        MetricUnavailable,
        CodecUnavailable,
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        NotADirectoryError,
    ) as err:
        # Config, manifest, audio, path and metric- or codec-availability errors carry a message meant for
        # users (the path ones name the path: e.g. an --output that is an existing file).
        logging.getLogger("sealign").debug("details", exc_info=True)
        logging.getLogger("sealign").error("%s", err)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("sealign").error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
