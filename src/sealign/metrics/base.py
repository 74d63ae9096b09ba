"""The metric contract: what a metric declares, what it receives, and what it returns.

A backend implements :meth:`Metric._score` on utterances that already satisfy its declared
requirements and are resampled to its rate. :meth:`Metric.score_batch` does the rest: it records a
skip reason for utterances missing a requirement, and isolates failures so one bad utterance never
stops a batch.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sealign.audio.io import mono_float, resample
from sealign.utils.device import parse_device

log = logging.getLogger(__name__)


# How a metric output becomes a reward (sealign.rewards.composite.to_reward_scale)
REWARD_SCALES = ("auto", "mos", "error_rate", "identity", "negated")


@dataclass(frozen=True)
class MetricInfo:
    """Static description of a metric (VERSA-style). ``reward_scale``: what ``scale: auto``
    means for its outputs in a reward; ``auto`` decides by range and direction (see
    :func:`sealign.rewards.composite.auto_scale`), a distance without an upper bound such as
    MCD declares ``negated``. ``user_weights``: the constructor option that names weights the
    user must provide (nothing installable ships them). ``packages``: modules it needs that are
    installed separately, with ``install``."""

    name: str
    outputs: tuple[str, ...]
    higher_is_better: tuple[bool, ...]
    ranges: tuple[tuple[float, float], ...]
    sample_rate: int = 16000
    needs_reference: bool = False
    needs_text: bool = False
    needs_speaker_ref: bool = False
    version: str = "1"
    description: str = ""
    reward_scale: str = "auto"
    # the constructor option through which users give the model's weights when none are
    # installed with the metric (e.g. "weights"); empty: it runs with what pip installed
    user_weights: str = ""
    # Python modules its default backend imports that installing sealign does not bring (their
    # wheels pin packages that conflict with ours), and the command that installs them
    packages: tuple[str, ...] = ()
    install: str = ""

    def __post_init__(self) -> None:
        if self.reward_scale not in REWARD_SCALES:
            raise ValueError(
                f"metric {self.name}: reward_scale {self.reward_scale!r} unknown; "
                f"known: {', '.join(REWARD_SCALES)}"
            )
        n = len(self.outputs)
        if len(self.higher_is_better) != n or len(self.ranges) != n:
            raise ValueError(
                f"metric {self.name}: outputs, higher_is_better and ranges differ in length"
            )


def _keeping_torch_rng(load: Any) -> Any:
    """``load`` run without moving torch's global random stream: building a model initializes
    its weights at random before the checkpoint replaces them, and a metric loaded lazily, at
    its first score, would otherwise shift every later draw of a seeded training run."""

    @functools.wraps(load)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get("_loaded_once"):  # scoring calls load() every batch: no fork then
            return load(self, *args, **kwargs)
        import torch

        with _FIRST_LOAD, torch.random.fork_rng(devices=[]):  # one at a time: restores in order
            out = load(self, *args, **kwargs)
        self._loaded_once = True
        return out

    return wrapped


_FIRST_LOAD = threading.RLock()


@dataclass
class Utterance:
    """One signal to judge, with optional side information. Arrays are mono float32. The
    references are at ``sample_rate`` unless ``reference_rate`` / ``speaker_ref_rate`` say
    otherwise (a 16-kHz reference of a 48-kHz output is then resampled once, to the metric's
    rate, instead of up to the output's and down again)."""

    id: str
    audio: np.ndarray
    sample_rate: int
    reference: np.ndarray | None = None
    text: str | None = None
    speaker_ref: np.ndarray | None = None
    reference_rate: int | None = None
    speaker_ref_rate: int | None = None

    def __post_init__(self) -> None:
        # a mistake of the caller's, not of the audio: an error now rather than a score of
        # int16 samples read as floats, or of one channel of two
        self.audio = mono_float(self.audio, f"{self.id}: audio")
        self.reference = mono_float(self.reference, f"{self.id}: reference")
        self.speaker_ref = mono_float(self.speaker_ref, f"{self.id}: speaker_ref")

    def seconds(self, which: str = "audio") -> float:
        """Duration of ``audio``, ``reference`` or ``speaker_ref`` (0 when absent)."""
        x = getattr(self, which)
        rate = {"reference": self.reference_rate, "speaker_ref": self.speaker_ref_rate}
        return 0.0 if x is None else x.size / (rate.get(which) or self.sample_rate)

    def at_rate(self, sr: int) -> Utterance:
        """A copy with every signal resampled to ``sr``."""
        if sr == self.sample_rate and not (self.reference_rate or self.speaker_ref_rate):
            return self

        def rs(x: np.ndarray | None, rate: int | None) -> np.ndarray | None:
            return None if x is None else resample(x, rate or self.sample_rate, sr)

        return Utterance(
            self.id, rs(self.audio, None), sr, rs(self.reference, self.reference_rate),
            self.text, rs(self.speaker_ref, self.speaker_ref_rate),
        )  # fmt: skip


@dataclass
class MetricResult:
    """Outcome of one metric on one utterance: values, or a skip reason, or an error.

    ``details``: by-products some metrics return beside their values (e.g. the ASR transcript
    of WER); never cached or serialized.
    """

    values: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    error: str | None = None
    details: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.error is None

    def to_json(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        if self.error is not None:
            return {"error": self.error}
        return dict(self.values)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MetricResult:
        if "skipped" in d:
            return cls(skipped=d["skipped"])
        if "error" in d:
            return cls(error=d["error"])
        return cls(values={k: float(v) for k, v in d.items()})


class MetricUnavailable(RuntimeError):
    """The metric's model or package cannot be loaded; the message says what is missing and how
    to provide it."""


_INFO_ONLY = ("needs_reference", "needs_text", "needs_speaker_ref", "higher_is_better", "outputs")


def below_rate(
    utt: Utterance, rate: int, which: tuple[str, ...] = ("audio", "reference")
) -> str | None:
    """Why ``utt``'s audio or reference (those of ``which``), recorded below ``rate`` Hz, lacks
    the band a metric judges at ``rate`` (resampled up, its top band is empty), or None."""
    for what, sr in (("audio", utt.sample_rate), ("reference", utt.reference_rate)):
        if what not in which or (utt.reference is None and what == "reference"):
            continue
        if sr is not None and sr < rate:
            return f"{what} at {sr} Hz, below the metric's {rate} Hz"
    return None


def unusable_audio(utt: Utterance, used: set[str]) -> str | None:
    """Why ``utt``'s audio (or a reference among the inputs ``used``) cannot be judged, or
    None."""
    for what, x, read in (
        ("audio", utt.audio, True),
        ("reference", utt.reference, "reference" in used),
        ("speaker reference", utt.speaker_ref, "speaker_ref" in used),
    ):
        if x is None or not read:
            continue
        if x.size == 0:
            return f"empty {what}"
        if not np.isfinite(x).all():
            return f"{what} holds NaN or inf"
        if not np.any(x):
            return f"digitally silent {what} (every sample 0)"
    return None


# max_seconds of the metrics whose transformer attends over the whole clip: a 60-s clip at
# wav2vec2's 50 frames/s holds 12 heads x 3000² attention weights, about 0.4 GB a layer
ATTENTION_MAX_SECONDS = 60.0


def checked_max_seconds(value: float | None, metric: str) -> float | None:
    """``value`` if it is a length limit (> 0 seconds) or None (no limit), else a ValueError."""
    if value is not None and not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"{metric}: max_seconds must be > 0 (or null: no limit), got {value!r}")
    return value


class Metric:
    """Base class of all metrics. Subclasses set ``info`` and implement ``_score``."""

    info: MetricInfo
    # Longest audio (and reference) in seconds the metric scores; longer is an error of its
    # utterance. Set by metrics whose model attends over the whole clip, whose memory grows
    # with the square of its length.
    max_seconds: float | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "load" in cls.__dict__:
            cls.load = _keeping_torch_rng(cls.__dict__["load"])  # type: ignore[method-assign]
        # an easy mistake that would otherwise be ignored: the runner reads these from `info`
        misplaced = [k for k in _INFO_ONLY if k in cls.__dict__]
        if misplaced:
            raise TypeError(
                f"{cls.__name__}: declare {', '.join(misplaced)} as MetricInfo fields "
                f"(info = MetricInfo(..., {misplaced[0]}=True)), not as class attributes"
            )

    def __init__(self, num_threads: int = 2, device: str = "cpu") -> None:
        """``device``: where the metric's model runs (``cpu``, ``cuda``, ``cuda:N``); only
        metrics whose constructor takes ``device`` run anywhere but on the CPU."""
        self.num_threads = num_threads
        self.device = parse_device(device)

    def settings(self) -> dict[str, Any]:
        """Settings that change the numbers (part of the cache key)."""
        return {}

    def inputs_used(self) -> set[str]:
        """Which optional inputs (``reference``, ``text``, ``speaker_ref``) can change the output.

        Defaults to the declared requirements; metrics with fallbacks override it.
        """
        i = self.info
        used = {"reference"} if i.needs_reference else set()
        if i.needs_text:
            used.add("text")
        if i.needs_speaker_ref:
            used.add("speaker_ref")
        return used

    def load(self) -> None:
        """Load models now (otherwise they load lazily on first use)."""

    def _score(self, utts: list[Utterance]) -> list[dict[str, Any]]:
        """Output values per utterance; an optional ``"details"`` entry (a dict) becomes
        :attr:`MetricResult.details` instead of an output."""
        raise NotImplementedError

    def missing_requirement(self, utt: Utterance) -> str | None:
        i = self.info
        if i.needs_reference and utt.reference is None:
            return "no reference"
        if i.needs_text and not (utt.text and utt.text.strip()):
            return "no text"
        if i.needs_speaker_ref and utt.speaker_ref is None:
            return "no speaker reference"
        return None

    def score_batch(self, utts: list[Utterance]) -> list[MetricResult]:
        """Score a batch; one :class:`MetricResult` per utterance, in order. Audio that is
        empty, not finite or digitally silent is an error of its utterance: metrics would
        otherwise give it a number (a hallucinated transcript, a 0-dB SI-SDR, a neutral MOS)
        that a reward would take at face value."""
        results: list[MetricResult | None] = [None] * len(utts)
        todo: list[int] = []
        for k, u in enumerate(utts):
            reason = self.missing_requirement(u)
            if reason is not None:
                results[k] = MetricResult(skipped=reason)
            elif (bad := unusable_audio(u, self.inputs_used())) is not None:
                results[k] = MetricResult(error=bad)
            elif (long := self._too_long(u)) is not None:
                results[k] = MetricResult(error=long)
            else:
                todo.append(k)
        if todo:
            ready = [utts[k].at_rate(self.info.sample_rate) for k in todo]
            try:
                outs = self._score(ready)
                for k, o in zip(todo, outs, strict=True):
                    results[k] = self._checked(o)
            except MetricUnavailable:
                raise
            except Exception as err:  # noqa: BLE001 - isolate the failing utterance(s)
                if len(todo) == 1:
                    log.warning("%s failed on %s: %s", self.info.name, utts[todo[0]].id, err)
                    results[todo[0]] = MetricResult(error=f"{type(err).__name__}: {err}")
                else:
                    for k, u in zip(todo, ready, strict=True):
                        results[k] = self.score_batch([u])[0]
        return [r if r is not None else MetricResult(error="no result") for r in results]

    def _too_long(self, utt: Utterance) -> str | None:
        if self.max_seconds is None:
            return None
        used = self.inputs_used()
        for what in ("audio", "reference", "speaker_ref"):
            if (what == "audio" or what in used) and utt.seconds(what) > self.max_seconds:
                return (f"{what.replace('_', ' ')} too long for {self.info.name} "
                        f"({utt.seconds(what):.1f} s > max_seconds {self.max_seconds:g}; "
                        f"metric_options.{self.info.name}.max_seconds raises it)")  # fmt: skip
        return None

    def _checked(self, out: dict[str, Any]) -> MetricResult:
        details = out.get("details")
        vals = {k: float(v) for k, v in out.items() if k != "details"}
        if not set(vals) & set(self.info.outputs):  # scored as nothing, silently, otherwise
            return MetricResult(error=f"returned {sorted(vals) or 'no values'}, none of its "
                                      f"declared outputs {list(self.info.outputs)}")  # fmt: skip
        bad = [k for k, v in vals.items() if not np.isfinite(v)]
        if bad:
            return MetricResult(error=f"non-finite output for {', '.join(bad)}", details=details)
        return MetricResult(values=vals, details=details)

    def __call__(self, utts: list[Utterance]) -> list[MetricResult]:
        return self.score_batch(utts)
