"""Every `sealign ...` command line in the README, docs/ and the commands' --help examples
parses with today's CLI (options that exist, choices that are valid), so the docs cannot drift
from the code unnoticed. Nothing is run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sealign.cli import build_parser, parse_command_line

ROOT = Path(__file__).resolve().parents[1]
_LAUNCH = re.compile(r"(?:^|\s)(?:-m\s+)?(sealign\s.*)$")


def _joined(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines continued with a trailing backslash or inside an open quote, joined; (first line
    number, text)."""
    out, buf, start = [], "", 0
    for n, text in lines:
        start = n if not buf else start
        buf = f"{buf} {text.strip()}" if buf else text.strip()
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        try:
            shlex.split(buf)
        except ValueError:  # a quoted value goes on on the next line
            continue
        out.append((start, buf))
        buf = ""
    return out


def _commands(text: str, where: str, blocks_only: bool) -> list[tuple[str, str]]:
    """``(file:line, command)`` of each ``sealign`` line in fenced code blocks (markdown) or in
    the whole text (a docstring's examples)."""
    lines, inside = [], not blocks_only
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside if blocks_only else inside
            continue
        if inside and not line.lstrip().startswith("#"):  # comments may hold apostrophes
            lines.append((n, line.split(" #", 1)[0]))
    found = []
    for n, line in _joined(lines):
        m = _LAUNCH.search(line)
        if m and "..." not in line and "…" not in line and "$" not in line:
            found.append((f"{where}:{n}", m.group(1)))
    return found


def _all_commands() -> list[tuple[str, str]]:
    out = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        out += _commands(md.read_text(encoding="utf-8"), md.name, blocks_only=True)
    import sealign.commands

    for py in sorted(Path(sealign.commands.__file__).parent.glob("*.py")):  # an install's too
        doc = py.read_text(encoding="utf-8").split('"""')[1] if '"""' in py.read_text() else ""
        examples = doc.split("examples:", 1)[1] if "examples:" in doc else ""
        out += _commands(examples.replace("\\\\", "\\"), py.name, blocks_only=False)
    return out


COMMANDS = _all_commands()


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) > 40
    assert any(where.startswith("gspo_demo.md") for where, _ in COMMANDS)
    assert any(where.startswith("eval.py") for where, _ in COMMANDS)


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, command, capsys):
    argv = shlex.split(command)[1:]
    try:
        args = parse_command_line(build_parser(), argv)
    except SystemExit:
        pytest.fail(f"{where}: {command}\n{capsys.readouterr().err}")
    assert getattr(args, "func", None) is not None, f"{where}: no command in {command}"
