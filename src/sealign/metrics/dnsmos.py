"""DNSMOS P.835 (SIG/BAK/OVRL) and DNSMOS P.808 with the ONNX models shipped in ``speechmos``.

"exact" mode reproduces Microsoft's DNSMOS script as ``speechmos.dnsmos.run`` implements it:

* a clip shorter than 9.01 s is doubled (appended to itself) until it is at least 9.01 s long;
* windows of 9.01 s (144160 samples) start every second; their number is
  ``int(floor(n / 16000) - 9.01) + 1``, and a window whose float-computed end makes it one
  sample short is dropped (this happens for the 8th to 24th window and a few later ones);
* P.835: the raw window goes through ``sig_bak_ovr.onnx`` and each of the three raw outputs
  through a fixed polynomial (a personalized model and polynomials exist);
* P.808: ``model_v8.onnx`` sees a 120-band log-mel spectrogram of the window minus its last 160
  samples (librosa defaults: centred 321-point periodic-Hann STFT with zero padding, hop 160,
  Slaney mel, ``power_to_db(ref=max, top_db=80)``, then ``(x + 40) / 40``);
* each output is the mean over windows of the mapped per-window values.

Speed comes from sharing work between the overlapping windows of a clip. All windows start on
the same 160-sample frame grid, and ``sig_bak_ovr.onnx`` frames its input with hop 160, then
applies four 3×3 convolutions at full time resolution (98% of its multiply-adds) before pooling.
So the model is split after those four layers: they run once over the span of a clip's windows,
each window takes its 900 frames from that span, and only the 4 frames at each of its edges,
which see the window's zero padding, are computed from the window alone; pooling and the dense
layers then run per window. A clip shorter than a window whose length is a whole number of
frames (a multiple of 10 ms, as every demo clip is) repeats on the frame grid, so its activations
repeat too: one pass over a single period serves all its windows. The P.808 mel features of all
windows likewise come from one STFT. On one thread (``benchmarks/dnsmos_speed.py``), exact mode
takes 0.39 s for a 3.7-s clip of whole frames, 0.79 s for one of 3.70125 s (1.70 s before the
sharing, 2.2 s in speechmos), and 1.1 s for a 20-s clip (3.5 s before).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from sealign.metrics.base import Metric, MetricInfo, MetricUnavailable, Utterance
from sealign.utils.device import onnx_providers
from sealign.utils.threads import ort_session_options

SR = 16000
WINDOW_SECONDS = 9.01
WINDOW = int(WINDOW_SECONDS * SR)  # 144160 samples
P808_TRIM = 160  # P.808 sees the window minus its last 160 samples
P808_LEN = WINDOW - P808_TRIM
N_FFT = 321
MEL_HOP = 160
N_MELS = 120
P808_FRAMES = 1 + (P808_LEN + 2 * (N_FFT // 2) - N_FFT) // MEL_HOP  # 900 (centred STFT)
_FRAME = 320  # P.835 frame length (hop MEL_HOP)
_P835_FRAMES = (WINDOW - _FRAME) // MEL_HOP + 1  # 900
# Frames at each window edge whose 4th-convolution activations see the window's zero padding
_EDGE = 4
_AMIN = 1e-10
_TOP_DB = 80.0

# Cubic/quadratic maps from raw model outputs to MOS, highest power first (Microsoft's values).
_POLYS: dict[bool, dict[str, tuple[float, ...]]] = {
    False: {
        "sig": (-0.08397278, 1.22083953, 0.0052439),
        "bak": (-0.13166888, 1.60915514, -0.39604546),
        "ovrl": (-0.06766283, 1.11546468, 0.04602535),
    },
    True: {
        "sig": (-0.01019296, 0.02751166, 1.19576786, -0.24348726),
        "bak": (-0.04976499, 0.44276479, -0.1644611, 0.96883132),
        "ovrl": (-0.00533021, 0.005101, 1.18058466, -0.11236046),
    },
}
_INSTALL_HINT = "pip install speechmos==0.0.1.1"


def window_starts(n: int) -> tuple[int, list[int]]:
    """Length of the (doubled) clip and the start sample of every window DNSMOS scores.

    Uses the same float expressions as the reference script so that its dropped windows (end
    computed one sample short) are dropped here too.
    """
    if n <= 0:
        raise ValueError("empty audio")
    total = n
    while total < WINDOW:
        total *= 2
    num_hops = int(np.floor(total / SR) - WINDOW_SECONDS) + 1
    starts = []
    for idx in range(num_hops):
        start = int(idx * SR)
        end = int((idx + WINDOW_SECONDS) * SR)
        if min(end, total) - start >= WINDOW:
            starts.append(start)
    return total, starts


def pick_evenly(count: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(count)`` (each at the centre of its share)."""
    if k >= count:
        return list(range(count))
    return [int((j + 0.5) * count / k) for j in range(k)]


def plan_clip(
    audio: np.ndarray, max_windows: int | None = None
) -> tuple[np.ndarray, list[int], int]:
    """The (doubled) clip, the start of every window to score (``max_windows`` keeps that many,
    spread evenly) and the clip's length if the windows repeat it on the frame grid, else 0."""
    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    _, starts = window_starts(x.size)
    if max_windows is not None:
        starts = [starts[i] for i in pick_evenly(len(starts), max_windows)]
    period = x.size if x.size < WINDOW and x.size % MEL_HOP == 0 else 0
    if starts[-1] + WINDOW > x.size:
        x = np.resize(x, starts[-1] + WINDOW)  # cyclic repetition, as the doubling produces
    return x, starts, period


def group_windows(starts: list[int], size: int) -> list[list[int]]:
    """Consecutive runs of at most ``size`` overlapping windows (their work is shared)."""
    groups: list[list[int]] = []
    for s in starts:
        if groups and len(groups[-1]) < size and s - groups[-1][-1] < WINDOW:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def _frames(audio: np.ndarray, first: int, count: int) -> np.ndarray:
    """(count, 320) frames with hop 160 from sample ``first``, as the P.835 model frames."""
    seg = audio[first : first + MEL_HOP * (count - 1) + _FRAME]
    return np.lib.stride_tricks.sliding_window_view(seg, _FRAME)[::MEL_HOP]


class _P835:
    """``sig_bak_ovr.onnx`` split after its last full-resolution convolution.

    ``front`` maps frames (N, 320, F) to the 4th convolution's activations (N, 32, F, 161) for
    any F; ``back`` maps a window's (N, 32, 900, 161) activations to the 3 raw outputs.
    """

    def __init__(self, path: Path, options: Any, providers: list[Any]) -> None:
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(path))
        nodes = list(model.graph.node)
        convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
        pools = [i for i, n in enumerate(nodes) if n.op_type == "MaxPool"]
        # the two STFT convolutions (real, imaginary), then exactly four 3×3 ones before pooling
        if len(convs) < 6 or not pools or sum(c < pools[0] for c in convs) != 6:
            raise MetricUnavailable(f"dnsmos: unexpected graph in {path}: {_INSTALL_HINT}")
        stft, cut = convs[:2], pools[0]
        frames_in = [nodes[i].input[0] for i in stft]
        act, out = nodes[cut].input[0], model.graph.output[0].name
        front = self._subgraph(
            model, nodes[stft[0] : cut], frames_in, ["N", _FRAME, "F"], act, ["N", 32, "F", 161]
        )
        back = self._subgraph(
            model, nodes[cut:], [act], ["N", 32, _P835_FRAMES, 161], out, ["N", 3]
        )
        self.front = ort.InferenceSession(front, options, providers=providers)
        self.back = ort.InferenceSession(back, options, providers=providers)

    @staticmethod
    def _subgraph(
        model: Any, nodes: list, inputs: list[str], in_shape: list, output: str, out_shape: list
    ) -> bytes:
        """The model restricted to ``nodes``, reading one new input wherever ``inputs`` were."""
        import onnx
        from onnx import helper

        name = "x"
        graph_nodes = []
        for node in nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            for k, x in enumerate(copy.input):
                if x in inputs:
                    copy.input[k] = name
            graph_nodes.append(copy)
        used = {x for node in graph_nodes for x in node.input}
        graph = helper.make_graph(
            graph_nodes,
            "dnsmos_part",
            [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, out_shape)],
            [t for t in model.graph.initializer if t.name in used],
        )
        part = helper.make_model(
            graph, opset_imports=model.opset_import, ir_version=model.ir_version
        )
        return part.SerializeToString()

    def _front(self, frames: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(frames.transpose(0, 2, 1), dtype=np.float32)
        return self.front.run(None, {"x": x})[0]

    def raw(self, audio: np.ndarray, starts: list[int], period: int = 0) -> np.ndarray:
        """(len(starts), 3) raw outputs of the windows ``audio[s:s + WINDOW]``.

        The starts are sorted and on one frame grid. Without ``period`` they overlap (one group
        of :func:`group_windows`) and the activations come from one pass over their span. With
        ``period`` (a multiple of the hop) the audio repeats with that period, so its frames and,
        away from a window's edges, its activations repeat every ``period // 160`` frames: one
        pass over a period serves every window.
        """
        n, e = _P835_FRAMES, _EDGE
        acts = np.empty((len(starts), 32, n, 161), dtype=np.float32)
        if period:
            m = period // MEL_HOP
            lead = -(-e // m) * period  # whole periods before the one computed, at least e frames
            cyclic = np.resize(audio[:period], lead + MEL_HOP * (m + e + 1))
            one = self._front(_frames(cyclic, lead - e * MEL_HOP, m + 2 * e)[None])[0, :, e:-e]
            for w, s in enumerate(starts):
                acts[w] = one[:, (s // MEL_HOP + np.arange(n)) % m]
            skip = 0
        else:
            base = starts[0]
            span = self._front(_frames(audio, base, (starts[-1] - base) // MEL_HOP + n)[None])[0]
            for w, s in enumerate(starts):
                first = (s - base) // MEL_HOP
                acts[w] = span[:, first : first + n]
            skip = 1  # the span's ends are the first window's start and the last one's end
        lefts, rights = starts[skip:], starts[: len(starts) - skip]
        if lefts:
            edges = self._front(
                np.stack(
                    [_frames(audio, s, 2 * e) for s in lefts]
                    + [_frames(audio, s + MEL_HOP * (n - 2 * e), 2 * e) for s in rights]
                )
            )
            acts[skip:, :, :e] = edges[: len(lefts), :, :e]
            acts[: len(rights), :, -e:] = edges[len(lefts) :, :, e:]
        return self.back.run(None, {"x": acts})[0]


class _MelFrontEnd:
    """P.808 input features, computed as librosa's melspectrogram + power_to_db would."""

    def __init__(self) -> None:
        import librosa
        from scipy.signal import get_window

        self.window = get_window("hann", N_FFT, fftbins=True)  # float64, as librosa uses it
        basis = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS)
        self.basis_t = np.ascontiguousarray(basis.T, dtype=np.float32)  # (161, 120)

    def _log_mel(self, frames: np.ndarray) -> np.ndarray:
        """``10 log10(max(amin, mel power))`` of (F, 321) frames → (F, 120) float32."""
        spec = np.fft.rfft(frames * self.window, axis=-1).astype(np.complex64)
        power = np.abs(spec) ** 2
        mel = power @ self.basis_t
        return 10.0 * np.log10(np.maximum(np.float32(_AMIN), mel))

    def features(self, audio: np.ndarray, starts: list[int]) -> np.ndarray:
        """(len(starts), 900, 120) float32 features of the windows ``audio[s:s + 144000]``.

        The starts differ by multiples of the STFT hop, so interior frames of the windows
        coincide: one STFT over their span serves them all, and only each window's first and
        last frame, which reach into its zero padding, are computed separately.
        """
        if any((s - starts[0]) % MEL_HOP for s in starts):
            raise ValueError("dnsmos: window starts must lie on one 160-sample grid")
        half = N_FFT // 2
        base, last = min(starts), max(starts)
        span = audio[base : last + P808_LEN]
        padded = np.pad(span, (half, half + 1))
        shared = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::MEL_HOP]
        n_shared = (last - base) // MEL_HOP + P808_FRAMES
        edges = np.zeros((len(starts), 2, N_FFT), dtype=np.float32)
        for w, s in enumerate(starts):
            edges[w, 0, half:] = audio[s : s + half + 1]
            tail = s + (P808_FRAMES - 1) * MEL_HOP - half
            edges[w, 1, :-1] = audio[tail : s + P808_LEN]
        logs = self._log_mel(np.concatenate([shared[:n_shared], edges.reshape(-1, N_FFT)]))
        shared_log, edge_log = logs[:n_shared], logs[n_shared:].reshape(len(starts), 2, N_MELS)
        out = np.empty((len(starts), P808_FRAMES, N_MELS), dtype=np.float32)
        for w, s in enumerate(starts):
            first = (s - base) // MEL_HOP
            out[w] = shared_log[first : first + P808_FRAMES]
            out[w, 0] = edge_log[w, 0]
            out[w, -1] = edge_log[w, 1]
        out -= out.max(axis=(1, 2), keepdims=True)  # ref = max of each window
        np.maximum(out, np.float32(-_TOP_DB), out=out)
        out += np.float32(40.0)
        out /= np.float32(40.0)
        return out


def _model_dir() -> Path:
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable(f"dnsmos needs the speechmos wheel's ONNX models: {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


class DNSMOS(Metric):
    """DNSMOS P.835 SIG/BAK/OVRL and P.808 MOS (1–5, no reference) on 16 kHz audio.

    ``personalized`` selects the personalized P.835 model and polynomials (P.808 is the same
    model either way). ``batch_size`` is the most windows of a clip that share one pass of the
    convolutions (peak memory about 0.15 GB per window; a 60-s clip takes 5.4 s with 8, 14.9 s
    with 1, on one thread); it changes the numbers only by float rounding. Unlike speechmos,
    samples outside [-1, 1] are scored rather than rejected.

    ``mode="exact"`` equals ``speechmos.dnsmos.run`` to float precision (≤ 1e-6 measured).

    ``mode="fast"`` scores only ``fast_windows`` (default 1) windows per clip, spread evenly over
    the windows exact mode averages (1–7 for clips under 33 s; the reference drops the 8th to
    24th), so by default one window per clip is scored. Clips with a single window (9.01–11 s) are
    exact. Measured deviation from exact on ~120 eSpeak clips of 2–30 s, clean and with white
    noise at 0–20 dB SNR: max abs SIG 0.24, BAK 0.23, OVRL 0.21, P.808 0.19; mean abs 0.04–0.05.
    With ``fast_windows=2``: max 0.26, 0.20, 0.13, 0.11; mean abs 0.03.
    """

    info = MetricInfo(
        name="dnsmos",
        outputs=("sig", "bak", "ovrl", "p808"),
        higher_is_better=(True, True, True, True),
        ranges=((1.0, 5.0), (1.0, 5.0), (1.0, 5.0), (1.0, 5.0)),
        sample_rate=SR,
        version="1",
        description="DNSMOS P.835 SIG/BAK/OVRL + P.808 (Microsoft ONNX models from speechmos)",
    )

    def __init__(
        self,
        num_threads: int = 2,
        personalized: bool = False,
        mode: str = "exact",
        fast_windows: int = 1,
        batch_size: int = 8,
        device: str = "cpu",
    ) -> None:
        super().__init__(num_threads, device)
        self._providers = onnx_providers(device)  # fails now, not after a rollout, without a GPU
        if mode not in ("exact", "fast"):
            raise ValueError(f"dnsmos: mode must be 'exact' or 'fast', not {mode!r}")
        if fast_windows < 1 or batch_size < 1:
            raise ValueError("dnsmos: fast_windows and batch_size must be >= 1")
        self.personalized = bool(personalized)
        self.mode = mode
        self.fast_windows = int(fast_windows)
        self.batch_size = int(batch_size)
        self._primary = None
        self._p808 = None
        self._mel: _MelFrontEnd | None = None

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"personalized": self.personalized, "mode": self.mode}
        if self.mode == "fast":
            s["fast_windows"] = self.fast_windows
        return s

    def load(self) -> None:
        if self._primary is not None:
            return
        root = _model_dir()
        primary = root / ("pdnsmos_models" if self.personalized else "dnsmos_models")
        paths = (primary / "sig_bak_ovr.onnx", root / "dnsmos_models" / "model_v8.onnx")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise MetricUnavailable(f"dnsmos: missing {', '.join(missing)}: {_INSTALL_HINT}")
        import onnxruntime as ort

        opts = ort_session_options(self.num_threads)
        self._mel = _MelFrontEnd()
        self._p808 = ort.InferenceSession(str(paths[1]), opts, providers=self._providers)
        self._primary = _P835(paths[0], opts, self._providers)

    @staticmethod
    def _run(session: Any, x: np.ndarray) -> np.ndarray:
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        self.load()
        limit = self.fast_windows if self.mode == "fast" else None
        polys = _POLYS[self.personalized]
        out: list[dict[str, float]] = []
        for u in utts:
            audio, starts, period = plan_clip(u.audio, limit)
            raw, p808 = [], []
            for group in [starts] if period else group_windows(starts, self.batch_size):
                raw.append(self._primary.raw(audio, group, period))
                p808.append(self._run(self._p808, self._mel.features(audio, group))[:, 0])
            r = np.concatenate(raw).astype(np.float64)
            out.append(
                {
                    "sig": float(np.polyval(polys["sig"], r[:, 0]).mean()),
                    "bak": float(np.polyval(polys["bak"], r[:, 1]).mean()),
                    "ovrl": float(np.polyval(polys["ovrl"], r[:, 2]).mean()),
                    "p808": float(np.concatenate(p808).astype(np.float64).mean()),
                }
            )
        return out
