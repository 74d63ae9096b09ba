"""User extensions loaded before any command runs: metrics and codecs of your own.

A plugin is any importable module whose import registers something, e.g.
``sealign.metrics.register("loudness", Loudness)`` or
``sealign.codecs.register_codec("mycodec", MyCodec)``. sealign imports

* every module named in ``$SEALIGN_PLUGINS`` (comma-separated, e.g. ``mylab.sealign_ext``), and
* every entry point of the ``sealign.plugins`` group of the installed distributions, so a
  package can declare ``[project.entry-points."sealign.plugins"] mylab = "mylab.sealign_ext"``
  (or ``"mylab.sealign_ext:register"``: the module is imported and that function called).

The module must be importable (installed, or on ``PYTHONPATH``): console scripts such as
``sealign`` do not search the current folder.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points

ENV_VAR = "SEALIGN_PLUGINS"
GROUP = "sealign.plugins"

log = logging.getLogger("sealign")
_loaded: list[str] = []


def plugin_modules() -> list[str]:
    """Module names from ``$SEALIGN_PLUGINS``, in order, without blanks."""
    return [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]


def load_plugins() -> list[str]:
    """Import the plugin modules (once each); returns the names imported so far.

    Raises :class:`ValueError` naming the module when one cannot be imported."""
    targets = [(name, name) for name in plugin_modules()]
    targets += [(f"{ep.name} ({ep.value})", ep.value) for ep in entry_points(group=GROUP)]
    for label, target in targets:
        if target in _loaded:
            continue
        module, _, function = target.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            raise ValueError(
                f"plugin {label}: cannot import {module!r} ({err}); install it or put its folder "
                f"on PYTHONPATH, or remove it from ${ENV_VAR}"
            ) from err
        except Exception as err:  # noqa: BLE001 - the plugin's own error, named, not a traceback
            raise ValueError(f"plugin {label}: importing {module!r} failed: "
                             f"{type(err).__name__}: {err}") from err  # fmt: skip
        if function:  # an entry point "module:function" registers when called
            try:
                getattr(mod, function)()
            except Exception as err:  # noqa: BLE001
                raise ValueError(f"plugin {label}: {target} failed: "
                                 f"{type(err).__name__}: {err}") from err  # fmt: skip
        _loaded.append(target)
        log.debug("loaded plugin %s", label)
    return list(_loaded)
