"""Intrusive metrics against the clean reference: wideband PESQ, STOI, ESTOI, SI-SDR and LSD."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import numpy as np

from sealign.metrics.base import Metric, MetricInfo, Utterance, below_rate


def _aligned(u: Utterance) -> tuple[np.ndarray, np.ndarray]:
    """Output and reference trimmed to a common length (SE outputs may differ by a few samples)."""
    n = min(u.audio.size, u.reference.size)
    return u.audio[:n].astype(np.float64), u.reference[:n].astype(np.float64)


class _Intrusive(Metric):
    """A metric comparing the output with its reference sample by sample. Lengths may differ
    by ``max_length_mismatch`` seconds (then both are cut to the shorter); a larger difference
    means the two are not the same utterance, time-aligned, so it is skipped with the reason."""

    def __init__(self, num_threads: int = 2, max_length_mismatch: float = 0.1) -> None:
        super().__init__(num_threads)
        if not max_length_mismatch >= 0:
            raise ValueError(f"max_length_mismatch must be >= 0, got {max_length_mismatch}")
        self.max_length_mismatch = float(max_length_mismatch)

    def settings(self) -> dict:
        return {"max_length_mismatch": self.max_length_mismatch}

    def missing_requirement(self, utt: Utterance) -> str | None:
        reason = super().missing_requirement(utt)
        if reason is not None or utt.reference is None:
            return reason
        if not np.any(utt.reference):
            return "the reference is digitally silent"
        diff = abs(utt.seconds() - utt.seconds("reference"))
        if diff > self.max_length_mismatch:
            return (
                f"output and reference lengths differ by {diff:.3f} s "
                f"(more than max_length_mismatch {self.max_length_mismatch:g} s)"
            )
        return None


def si_sdr(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals zero-meaned."""
    est = estimate - estimate.mean()
    ref = reference - reference.mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + eps)
    target = alpha * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


class PESQWideband(_Intrusive):
    """ITU-T P.862.2 wideband PESQ (MOS-LQO, ≈1–4.64) via the ``pesq`` package."""

    info = MetricInfo(
        name="pesq_wb",
        outputs=("pesq_wb",),
        higher_is_better=(True,),
        ranges=((1.0, 4.64),),
        sample_rate=16000,
        needs_reference=True,
        description="wideband PESQ (P.862.2)",
    )

    def missing_requirement(self, utt: Utterance) -> str | None:
        # narrowband audio against a wideband reference is a fair test (of its lost band);
        # a narrowband reference is not one
        return super().missing_requirement(utt) or below_rate(utt, 16000, ("reference",))

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        from pesq import pesq

        out = []
        for u in utts:
            deg, ref = _aligned(u)
            out.append({"pesq_wb": float(pesq(16000, ref, deg, "wb"))})
        return out


class ESTOI(_Intrusive):
    """Extended short-time objective intelligibility (Jensen & Taal 2016) via ``pystoi``."""

    info = MetricInfo(
        name="estoi",
        outputs=("estoi",),
        higher_is_better=(True,),
        ranges=((-1.0, 1.0),),
        sample_rate=16000,
        needs_reference=True,
        description="extended STOI",
    )

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        from pystoi import stoi

        return [{"estoi": _stoi(stoi, u, True)} for u in utts]


# pystoi's value when fewer than 30 frames of speech are left after its silence removal (it
# only prints a warning): not a score
_STOI_TOO_SHORT = 1e-5


# pystoi dithers with numpy's global random stream: under a fixed seed (and this lock, as
# metrics may run in threads; (E)STOI is cheap, so running one at a time costs little) a score
# does not depend on what drew from the stream before. Code drawing from numpy's global
# stream in another thread at the same time would still interleave with it.
_STOI_RNG = threading.Lock()


def _stoi(stoi: Any, u: Utterance, extended: bool) -> float:
    deg, ref = _aligned(u)
    with _STOI_RNG:
        saved = np.random.get_state()
        np.random.seed(0)
        try:
            value = float(stoi(ref, deg, 16000, extended=extended))
        finally:
            np.random.set_state(saved)
    if value == _STOI_TOO_SHORT:
        raise ValueError("too little speech for (E)STOI: fewer than 30 frames (384 ms) are "
                         "left after its silence removal")  # fmt: skip
    return value


class STOI(_Intrusive):
    """Short-time objective intelligibility (Taal et al. 2011) via ``pystoi``: the classic
    score of VoiceBank-DEMAND tables (ESTOI is its extension to modulated noise)."""

    info = MetricInfo(
        name="stoi",
        outputs=("stoi",),
        higher_is_better=(True,),
        ranges=((-1.0, 1.0),),
        sample_rate=16000,
        needs_reference=True,
        description="short-time objective intelligibility",
    )

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        from pystoi import stoi

        return [{"stoi": _stoi(stoi, u, False)} for u in utts]


class SISDR(_Intrusive):
    """Scale-invariant signal-to-distortion ratio in dB."""

    info = MetricInfo(
        name="si_sdr",
        outputs=("si_sdr",),
        higher_is_better=(True,),
        ranges=((-50.0, 120.0),),
        sample_rate=16000,
        needs_reference=True,
        description="scale-invariant SDR (dB)",
    )

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        out = []
        for u in utts:
            deg, ref = _aligned(u)
            out.append({"si_sdr": si_sdr(deg, ref)})
        return out


def _stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| ``[frames, n_fft // 2 + 1]``: periodic Hann window, frames centred on multiples of
    ``hop`` with ``n_fft // 2`` zeros padded at both ends (``librosa.stft``'s defaults)."""
    from scipy.signal import get_window

    padded = np.pad(x, n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * get_window("hann", n_fft), axis=1))


GAINS = ("least_squares", "rms", "none")


def match_gain(
    estimate: np.ndarray, reference: np.ndarray, how: str = "least_squares", eps: float = 1e-8
) -> np.ndarray:
    """``estimate`` scaled onto ``reference`` before a spectral distance: by its least-squares
    gain (the URGENT challenges'), to the reference's RMS, or not at all (``none``).

    The least-squares gain is the waveform correlation over the output's energy, so it nearly
    vanishes for an output whose phase does not follow the reference (a vocoder's, a
    generative model's): the distance then mostly measures that level drop. ``rms`` compares
    spectra at equal energy whatever the phase."""
    if how == "least_squares":
        return estimate * (np.dot(reference, estimate) / (np.dot(estimate, estimate) + eps))
    if how == "rms":
        return estimate * np.sqrt(np.dot(reference, reference) / (np.dot(estimate, estimate) + eps))
    if how == "none":
        return estimate
    raise ValueError(f"gain must be one of {', '.join(GAINS)}, got {how!r}")


def log_spectral_distance(
    estimate: np.ndarray,
    reference: np.ndarray,
    sample_rate: int,
    frame_s: float = 0.032,
    hop_s: float = 0.016,
    eps: float = 1e-8,
    gain: str = "least_squares",
) -> float:
    """Log-spectral distance as the URGENT challenges compute it: the estimate is first scaled
    onto the reference (:func:`match_gain`; theirs: ``least_squares``); then, per STFT frame
    (32 ms, hop 16 ms), the root mean square over frequency of the natural-log power ratio,
    averaged over frames. 0 = equal spectra; larger is worse."""
    n_fft, hop = int(sample_rate * frame_s), int(sample_rate * hop_s)
    ref = _stft_magnitude(reference, n_fft, hop)
    est = _stft_magnitude(match_gain(estimate, reference, gain, eps), n_fft, hop)
    log_ratio = np.log(ref**2 / (est + eps) ** 2 + eps)
    return float(np.mean(np.sqrt(np.mean(log_ratio**2, axis=1))))


class _SpectralDistance(_Intrusive):
    """A distance between output and reference spectra after :func:`match_gain` (``gain``),
    at 16 kHz or at ``sample_rate`` (one of ``rates``; audio at a lower rate is skipped: its
    upper band would be empty, not wrong)."""

    rates: tuple[int, ...] = ()  # the rates the distance is defined at; () = 8000..192000

    def __init__(
        self,
        num_threads: int = 2,
        max_length_mismatch: float = 0.1,
        gain: str = "least_squares",
        sample_rate: int = 16000,
    ) -> None:
        super().__init__(num_threads, max_length_mismatch)
        name = type(self).info.name
        if gain not in GAINS:
            raise ValueError(f"{name}: gain must be one of {', '.join(GAINS)}, got {gain!r}")
        known = self.rates or range(8000, 192001)
        if not (isinstance(sample_rate, int) and sample_rate in known):
            allowed = ", ".join(map(str, self.rates)) if self.rates else "8000..192000"
            raise ValueError(f"{name}: sample_rate must be one of {allowed}, got {sample_rate}")
        self.gain = gain
        if sample_rate != type(self).info.sample_rate:
            self.info = replace(type(self).info, sample_rate=sample_rate)

    def settings(self) -> dict:
        return {**super().settings(), "gain": self.gain, "sample_rate": self.info.sample_rate}

    def missing_requirement(self, utt: Utterance) -> str | None:
        reason = super().missing_requirement(utt)
        return reason or below_rate(utt, self.info.sample_rate)


class LSD(_SpectralDistance):
    """Log-spectral distance to the reference (URGENT challenge definition, see
    :func:`log_spectral_distance`); ``gain``: see :func:`match_gain` (``rms`` for outputs whose
    phase is not the reference's). Frames where the reference is digitally silent count
    ``|ln 1e-8|`` = 18.4 per bin whatever the output, as in URGENT's code.

    At 16 kHz by default; ``sample_rate=48000`` judges the full band of 48-kHz recordings, as
    URGENT scores each file at its own rate (audio at a lower rate is then skipped: its upper
    band would be empty, not wrong)."""

    info = MetricInfo(
        name="lsd",
        outputs=("lsd",),
        higher_is_better=(False,),
        ranges=((0.0, float("inf")),),
        sample_rate=16000,
        needs_reference=True,
        reward_scale="negated",
        description="log-spectral distance (URGENT definition; gain-matched, natural-log power)",
    )

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        return [
            {"lsd": log_spectral_distance(*_aligned(u), u.sample_rate, gain=self.gain)}
            for u in utts
        ]
