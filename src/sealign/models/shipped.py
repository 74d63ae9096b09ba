"""The demo checkpoints that ship inside the package, and the ``shipped:<family>`` reference
that every command taking a model accepts in place of a folder (so an installed package can name
them without knowing where it was installed)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED_FAMILIES = ("ar", "mgm", "fm")
SHIPPED_PREFIX = "shipped:"


def shipped_checkpoint(family: str = "ar") -> Path:
    """The base checkpoint of ``family`` (``ar``, ``mgm`` or ``fm``) that ships inside the
    package (see docs/demo_checkpoint.md)."""
    if family not in SHIPPED_FAMILIES:
        raise ValueError(f"family must be one of {SHIPPED_FAMILIES}, got {family!r}")
    return Path(str(resources.files("sealign") / "assets" / f"{family}_demo"))


def model_path(ref: str | Path) -> Path:
    """``ref`` as a path: ``shipped:ar`` (``shipped:mgm``, ``shipped:fm``) is the package's
    demo checkpoint of that family, anything else the path as given."""
    text = str(ref)
    if text.startswith(SHIPPED_PREFIX):
        family = text[len(SHIPPED_PREFIX) :]
        if family not in SHIPPED_FAMILIES:
            raise ValueError(
                f"{text}: no such shipped model; use one of "
                + ", ".join(SHIPPED_PREFIX + f for f in SHIPPED_FAMILIES)
            )
        return shipped_checkpoint(family)
    return Path(ref)
