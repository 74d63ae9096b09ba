"""Name → metric class. Built-in backends are imported lazily so that listing metrics is cheap
and a backend whose package is missing only fails when it is used."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from sealign.metrics.base import Metric, MetricInfo
from sealign.utils.device import check_device

_BUILTIN: dict[str, str] = {
    "dnsmos": "sealign.metrics.dnsmos:DNSMOS",
    "distillmos": "sealign.metrics.distillmos:DistillMOS",
    "utmos": "sealign.metrics.utmos:UTMOS",
    "nisqa": "sealign.metrics.nisqa:NISQA",
    "nisqa_tts": "sealign.metrics.nisqa:NISQATTS",
    "wer": "sealign.metrics.wer:WER",
    "cer": "sealign.metrics.wer:CER",
    "text_likelihood": "sealign.metrics.text_likelihood:TextLikelihood",
    "asr_confidence": "sealign.metrics.text_likelihood:ASRConfidence",
    "spk_sim": "sealign.metrics.spk_sim:SpeakerSimilarity",
    "speechbertscore": "sealign.metrics.speechbertscore:SpeechBERTScore",
    "pesq_wb": "sealign.metrics.intrusive:PESQWideband",
    "estoi": "sealign.metrics.intrusive:ESTOI",
    "stoi": "sealign.metrics.intrusive:STOI",
    "si_sdr": "sealign.metrics.intrusive:SISDR",
    "lsd": "sealign.metrics.intrusive:LSD",
    "lps": "sealign.metrics.phoneme:PhonemeSimilarity",
    "mcd": "sealign.metrics.cepstral:MCD",
    "composite": "sealign.metrics.composite_measures:CompositeMeasures",
}
_USER: dict[str, Callable[..., Metric]] = {}


def register(name: str, factory: Callable[..., Metric], replace: bool = False) -> None:
    """Register a user metric (a :class:`Metric` subclass or any callable returning one).
    The same class defined again (a notebook cell run twice) replaces the first; another under
    a taken name needs ``replace=True``. Built-in metrics cannot be replaced."""
    if name in _BUILTIN:
        raise ValueError(f"metric {name!r} is built in; register yours under another name")
    declared = getattr(getattr(factory, "info", None), "name", name)
    if declared != name:
        raise ValueError(f"metric {name!r} declares MetricInfo(name={declared!r}); register it "
                         "under the name it declares")  # fmt: skip
    old = _USER.get(name)
    same = _qualname(old) == _qualname(factory) and "<lambda>" not in _qualname(factory)
    if old is not None and not replace and not same:
        raise ValueError(f"metric {name!r} is already registered (as {_qualname(old)}); pass "
                         "replace=True to replace it")  # fmt: skip
    _USER[name] = factory


def _qualname(factory: Callable[..., Metric] | None) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"


def metric_names() -> list[str]:
    """Every metric's name, built in and registered, sorted."""
    return sorted([*_BUILTIN, *_USER])


def metric_class(name: str) -> Callable[..., Metric]:
    """The class (or factory) registered as ``name``; KeyError naming the known ones."""
    if name in _USER:
        return _USER[name]
    if name not in _BUILTIN:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(metric_names())}")
    module, cls = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _parameters(factory: Callable[..., Metric]) -> Any:
    try:
        return inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a callable without a signature: let the call decide
        return {}


def takes_device(name: str) -> bool:
    """Whether metric ``name``'s constructor takes a ``device`` (it can run on a GPU). A metric
    that keeps :class:`Metric`'s own constructor runs no model of its own: it stays on the CPU."""
    factory = metric_class(name)
    if (
        isinstance(factory, type)
        and issubclass(factory, Metric)
        and (factory.__init__ is Metric.__init__)
    ):
        return False
    return "device" in _parameters(factory)


def with_device(name: str, options: dict[str, Any], device: str) -> dict[str, Any]:
    """``options`` for metric ``name`` plus ``device`` when the metric's constructor takes one by
    that name and the options do not set it already (metrics without one stay on the CPU)."""
    if device == "cpu" or "device" in options or not takes_device(name):
        return dict(options)
    return {**options, "device": device}


def build_metric(name: str, metric_device: str = "cpu", **options: Any) -> Metric:
    """Instantiate metric ``name`` with backend-specific ``options`` (e.g. ``num_threads``,
    ``device``). ``metric_device``: a command-wide device, the metric's ``device`` unless
    ``options`` set one (see :func:`with_device`)."""
    if isinstance(options.get("device"), str):  # a metric's own device: under torchrun, a
        from sealign.train.distributed import process_device  # bare cuda is this rank's GPU

        options = {**options, "device": process_device(options["device"])}
    options = with_device(name, options, metric_device)
    factory = metric_class(name)
    declared = getattr(getattr(factory, "info", None), "name", name)
    if declared != name:  # the score cache and the columns go by the declared name
        raise ValueError(f"metric {name!r} declares MetricInfo(name={declared!r}); register it "
                         "under the name it declares")  # fmt: skip
    params = _parameters(factory)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(options) - set(params)) if params and not takes_any else []
    if unknown:
        known = [k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        hint = ("; sealign passes num_threads (and device on a GPU) to every metric: add them, "
                "or **kwargs, to its constructor" if {"num_threads", "device"} & set(unknown)
                else "")  # fmt: skip
        raise ValueError(f"metric {name!r}: unknown option(s) {', '.join(unknown)}; it takes "
                         f"{', '.join(known) or 'none'}{hint}")  # fmt: skip
    try:
        metric = factory(**options)
        if "device" in options:  # a device this machine lacks fails here, for any metric
            check_device(str(options["device"]))
    except TypeError as err:
        raise ValueError(f"metric {name!r}: bad options {sorted(options)}: {err}") from err
    except ValueError as err:  # e.g. a device this machine lacks
        raise ValueError(f"metric {name!r}: {err}") from err
    return metric


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` metric ``name`` declares (a registered factory function, which
    has none of its own, is called once to read its metric's)."""
    factory = metric_class(name)
    info = getattr(factory, "info", None)
    return info if info is not None else factory(num_threads=1).info
