"""eSpeak NG speech synthesis through the shared library shipped in the ``espeakng-loader`` wheel.

No system package is needed. The library keeps global state, so calls are serialized by a lock;
use one process per worker for parallel synthesis.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4

_SYNTH_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Engine:
    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - dependency of the package
            raise RuntimeError(
                "espeak-ng needs the 'espeakng-loader' package: pip install espeakng-loader"
            ) from err
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, ctypes.c_char_p(data), 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialize (data path {data.decode()})")
        self._chunks: list[np.ndarray] = []

        def _cb(wav, n, _events):  # noqa: ANN001 - ctypes callback
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = _SYNTH_CB(_cb)  # keep a reference: ctypes callbacks must outlive their use
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng: unknown voice {voice!r}")
        self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self.lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        self._chunks = []
        err = self.lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak-ng synthesis failed with code {err}")
        self.lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


_engine: _Engine | None = None
_lock = threading.Lock()


def espeak_sample_rate() -> int:
    with _lock:
        return _get().sample_rate


def _get() -> _Engine:
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def synthesize_espeak(
    text: str,
    voice: str = "en-us",
    rate: int = 165,
    pitch: int = 50,
    pitch_range: int = 50,
    sample_rate: int | None = 16000,
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with eSpeak NG. Voice variants use ``+``, e.g. ``en-us+f3``.

    Returns ``(wav, sr)``; resampled to ``sample_rate`` unless None (native 22050 Hz).
    """
    from sealign.audio.io import resample

    with _lock:
        eng = _get()
        wav = eng.synth(text, voice, rate, pitch, pitch_range)
        sr = eng.sample_rate
    if sample_rate is not None and sample_rate != sr:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr
