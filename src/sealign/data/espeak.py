"""eSpeak NG speech synthesis through the shared library shipped in the ``espeakng-loader`` wheel.

No system package is needed. libespeak-ng keeps hidden global state between calls (the same
text can come out a few milliseconds longer or shorter depending on what was spoken before, even
after ``espeak_Terminate``), so every call loads a private copy of the library afresh and
unloads it afterwards: identical inputs give identical samples (about 6 ms overhead per call).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from sealign.utils.paths import cache_root

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_SYNTH_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_lock = threading.Lock()
_private: tuple[Path, bytes] | None = None


class EspeakUnavailable(RuntimeError):
    """espeak-ng cannot be loaded here; the message says what to install."""


def private_library() -> tuple[Path, bytes]:
    """Path of a private copy of libespeak-ng (its own inode, so dlopen gives fresh state) and
    the espeak-ng data path."""
    global _private
    if _private is not None:
        return _private
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - core dependency
        raise EspeakUnavailable(
            "espeak-ng needs 'espeakng-loader': pip install espeakng-loader"
        ) from err
    src = Path(espeakng_loader.get_library_path())
    data = espeakng_loader.get_data_path().encode()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    for base in (cache_root() / "espeak", Path(tempfile.gettempdir()) / f"sealign-{os.getuid()}"):
        dest = base / f"libespeak-ng-{digest}.so"
        if dest.is_file() and dest.stat().st_size == src.stat().st_size:
            _private = (dest, data)
            return _private
        try:
            base.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", dir=base)
            os.close(fd)
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
            _private = (dest, data)
            return _private
        except OSError:
            continue
    raise EspeakUnavailable(
        "cannot write a private copy of libespeak-ng (cache and /tmp unwritable)"
    )


def synthesize_espeak(
    text: str,
    voice: str = "en-us",
    rate: int = 165,
    pitch: int = 50,
    pitch_range: int = 50,
    sample_rate: int | None = 16000,
    seed: int | None = None,
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with eSpeak NG. Voice variants use ``+``, e.g. ``en-us+f3``.

    Returns ``(wav, sr)``; resampled to ``sample_rate`` unless None (native 22050 Hz). Some
    variants (e.g. ``+f2``, ``+f3``) vary their voicing at random: ``seed`` (None: 0) seeds it,
    so that the same call gives the same audio (eSpeak NG would seed it from the clock).
    """
    import _ctypes

    from sealign.audio.io import resample

    lib_path, data = private_library()
    chunks: list[np.ndarray] = []

    def _cb(wav, n, _events):  # noqa: ANN001 - ctypes callback
        if n > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    cb = _SYNTH_CB(_cb)
    with _lock:
        lib = ctypes.CDLL(str(lib_path))
        try:
            sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, ctypes.c_char_p(data), 0)
            if sr <= 0:
                raise RuntimeError(f"espeak-ng failed to initialize (data path {data.decode()})")
            lib.espeak_SetSynthCallback(cb)
            lib.espeak_ng_SetRandSeed(ctypes.c_long(int(seed or 0) & 0x7FFFFFFF))
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng: unknown voice {voice!r}")
            lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            lib.espeak_Synth.argtypes = [
                ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]  # fmt: skip
            err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise RuntimeError(f"espeak-ng synthesis failed with code {err}")
            lib.espeak_Synchronize()
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)
    wav = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
    if sample_rate is not None and sample_rate != sr:
        return resample(wav, sr, sample_rate), sample_rate
    return wav, int(sr)
