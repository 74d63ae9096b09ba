"""Audio loading, validation and resampling."""

from sealign.audio.io import AudioError, AudioLimits, load_audio, resample, validate_audio

__all__ = ["AudioError", "AudioLimits", "load_audio", "resample", "validate_audio"]
