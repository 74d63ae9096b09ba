"""Import a HiFi-GAN generator trained with the original implementation (jik876/hifi-gan) as a
folder that the ``mel_vocoder:`` codec loads.

The original code saves a generator as ``torch.save({"generator": state_dict})`` (``generator_v1``
and friends) beside a ``config.json`` of its training settings. Its convolutions are weight
normalized (``weight_g`` / ``weight_v``, or ``parametrizations.weight.original0/1`` from newer
torch). The import folds each weight norm into its weight. Residual blocks of type "1" (V1, V2)
go into a SpeechT5HifiGan, which has the same layers with plain weights (``ups.*`` renamed to
``upsampler.*``); type "2" (V3) into :class:`~sealign.codecs.hifigan_generator.HifiGanGenerator`,
which keeps the original names.

The ``mel.json`` written beside it reproduces HiFi-GAN's analysis: its FFT and window sizes and
mel band, natural log of ``max(mel, 1e-5)`` and frames that start at the input (``center:
false``: the signal reflect-padded by ``(n_fft − hop) / 2`` on each side), not centred on
multiples of the hop. Latents are standardized with one mean and standard deviation: measured on
the clean speech of ``manifest`` when given, else the defaults below.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sealign.codecs.base import CodecUnavailable
from sealign.codecs.hifigan_generator import (
    RESBLOCKS,
    HifiGanConfig,
    HifiGanGenerator,
    load_state_checked,
)
from sealign.codecs.vocoder import MelSettings, MelVocoderCodec

log = logging.getLogger(__name__)

CONFIG_KEYS = (
    "resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
    "resblock_kernel_sizes", "resblock_dilation_sizes", "num_mels", "n_fft", "hop_size",
    "win_size", "sampling_rate", "fmin", "fmax",
)  # fmt: skip
MEL_FLOOR = 1e-5  # HiFi-GAN's log(clamp(mel, min=1e-5))
# ln-mel statistics of the demo corpus's clean training speech at V1's analysis (22.05 kHz,
# 80 mels, n_fft 1024, hop 256, 0–8 kHz; `codec import-hifigan --manifest`): the latents'
# standardization when no clean speech is given to measure it on
DEFAULT_MEAN, DEFAULT_STD = -5.83, 2.35
LIST_KEYS = ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes")
# the original's ResBlock1 builds three pairs of convolutions, ResBlock2 two convolutions, from
# the first dilations of each list (any further ones are unused)
CONVS_PER_BLOCK = {"1": 3, "2": 2}
INT_KEYS = ("upsample_initial_channel", "num_mels", "n_fft", "hop_size", "win_size",
            "sampling_rate")  # fmt: skip


def read_hifigan_config(path: str | Path) -> dict[str, Any]:
    """The training ``config.json`` of a HiFi-GAN generator, checked for what the import needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HiFi-GAN config not found: {path}")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing HiFi-GAN settings: {', '.join(missing)}")
    if str(cfg["resblock"]) not in RESBLOCKS:
        raise ValueError(
            f"{path}: resblock {cfg['resblock']!r}: HiFi-GAN has residual blocks of type "
            f"{' and '.join(RESBLOCKS)} (V1 and V2 use type 1, V3 type 2)"
        )
    _check_types(cfg, path)
    hop = math.prod(cfg["upsample_rates"])
    if hop != cfg["hop_size"]:
        raise ValueError(
            f"{path}: the upsampling rates multiply to {hop}, but hop_size is {cfg['hop_size']}"
        )
    return cfg


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_types(cfg: dict[str, Any], path: Path) -> None:
    bad = [k for k in LIST_KEYS if not (isinstance(cfg[k], list) and cfg[k]
                                        and all(_is_int(v) and v > 0 for v in cfg[k]))]  # fmt: skip
    bad += [k for k in INT_KEYS if not (_is_int(cfg[k]) and cfg[k] > 0)]
    dil = cfg["resblock_dilation_sizes"]
    if not (isinstance(dil, list) and all(isinstance(d, list) and d and all(_is_int(v) and v > 0
                                          for v in d) for d in dil)):  # fmt: skip
        bad.append("resblock_dilation_sizes")
    bad += [k for k in ("fmin", "fmax") if not (cfg[k] is None and k == "fmax") and not (
        isinstance(cfg[k], int | float) and not isinstance(cfg[k], bool) and cfg[k] >= 0)]  # fmt: skip
    if bad:
        raise ValueError(
            f"{path}: these settings do not have HiFi-GAN's types (positive integers, lists of "
            f"them, frequencies ≥ 0): {', '.join(bad)}"
        )
    if len(dil) != len(cfg["resblock_kernel_sizes"]):
        raise ValueError(f"{path}: resblock_dilation_sizes needs one list per resblock kernel size")
    convs = CONVS_PER_BLOCK[str(cfg["resblock"])]
    if any(len(d) < convs for d in dil):
        raise ValueError(f"{path}: a residual block of type {cfg['resblock']} reads {convs} "
                         "dilations from each list of resblock_dilation_sizes")  # fmt: skip
    if len(cfg["upsample_rates"]) != len(cfg["upsample_kernel_sizes"]):
        raise ValueError(f"{path}: upsample_rates and upsample_kernel_sizes differ in length")


def fold_weight_norm(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with each weight-normalized weight (g, v) replaced by ``g · v / ‖v‖``, the norm
    taken over the dimensions where g has size 1 (dimension 0 for HiFi-GAN's layers, also for
    its transposed convolutions, whose dimension 0 is the input channels)."""
    import torch

    pairs = {
        ".weight_g": ".weight_v",
        ".parametrizations.weight.original0": ".parametrizations.weight.original1",
    }
    out: dict[str, Any] = {}
    done: set[str] = set()
    for key, value in state.items():
        for g_suffix, v_suffix in pairs.items():
            if key.endswith(g_suffix):
                base = key[: -len(g_suffix)]
                v = state.get(base + v_suffix)
                if v is None:
                    raise ValueError(f"{key} has no {base + v_suffix} beside it")
                g = value.double()
                dims = [d for d in range(v.dim()) if g.shape[d] == 1]
                v64 = v.double()
                norm = torch.linalg.vector_norm(v64, dim=dims, keepdim=True) if dims else v64.abs()
                out[base + ".weight"] = (v64 * (g / norm)).to(v.dtype)
                done.update({key, base + v_suffix})
    for key, value in state.items():
        if key not in done and not any(key.endswith(v) for v in pairs.values()):
            out[key] = value
        elif key not in done:
            raise ValueError(f"{key} has no weight-norm gain beside it")
    return out


def load_generator_state(path: str | Path) -> dict[str, Any]:
    """The generator's state dict from an original HiFi-GAN checkpoint file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HiFi-GAN generator checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors of a damaged or foreign file
        raise ValueError(f"{path}: not a readable torch checkpoint ({err})") from err
    state = ckpt.get("generator", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: expected a generator state dict (or {{'generator': state dict}}, as the "
            "original HiFi-GAN saves it)"
        )
    return state


def import_hifigan(
    checkpoint: str | Path,
    config: str | Path,
    manifest: str | Path | None = None,
    max_files: int = 100,
) -> MelVocoderCodec:
    """A :class:`MelVocoderCodec` around the HiFi-GAN generator ``checkpoint`` (original layout)
    with its training ``config``'s analysis; save it with ``.save(DIR)`` and use
    ``mel_vocoder:DIR``. Residual blocks of type 1 (V1, V2) become a ``transformers``
    SpeechT5HifiGan; type 2 (V3), which it cannot hold, a
    :class:`~sealign.codecs.hifigan_generator.HifiGanGenerator`."""
    cfg = read_hifigan_config(config)
    state = fold_weight_norm(load_generator_state(checkpoint))
    shape = {
        "model_in_dim": int(cfg["num_mels"]),
        "sampling_rate": int(cfg["sampling_rate"]),
        "upsample_initial_channel": int(cfg["upsample_initial_channel"]),
        "upsample_rates": [int(r) for r in cfg["upsample_rates"]],
        "upsample_kernel_sizes": [int(k) for k in cfg["upsample_kernel_sizes"]],
        "resblock_kernel_sizes": [int(k) for k in cfg["resblock_kernel_sizes"]],
        "resblock_dilation_sizes": [
            [int(d) for d in ds[: CONVS_PER_BLOCK[str(cfg["resblock"])]]]
            for ds in cfg["resblock_dilation_sizes"]
        ],  # fmt: skip
    }
    if str(cfg["resblock"]) == "2":
        vocoder: Any = HifiGanGenerator(HifiGanConfig(resblock="2", **shape))
    else:
        try:
            from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig
        except ImportError as err:
            raise CodecUnavailable(
                "importing a HiFi-GAN V1 / V2 needs the 'transformers' package: "
                "pip install transformers"
            ) from err
        state = {("upsampler" + k[3:] if k.startswith("ups.") else k): v for k, v in state.items()}
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                **shape,
                leaky_relu_slope=0.1,  # HiFi-GAN's LRELU_SLOPE
                normalize_before=False,  # HiFi-GAN reads raw log-mels
            )
        )
    load_state_checked(vocoder, state, checkpoint)
    settings = MelSettings(
        n_fft=int(cfg["n_fft"]),
        win_length=int(cfg["win_size"]),
        fmin=float(cfg["fmin"]),
        fmax=float(cfg["fmax"] or int(cfg["sampling_rate"]) / 2),
        mel_floor=MEL_FLOOR,
        log_base="e",
        center=False,
        latent_mean=DEFAULT_MEAN,
        latent_std=DEFAULT_STD,
    )
    codec = MelVocoderCodec(vocoder.eval(), settings)
    if manifest is None:
        log.warning("latents standardized with statistics measured at HiFi-GAN V1's analysis on "
                    "the demo corpus (mean %.2f, std %.2f); give clean speech of your own "
                    "(--manifest) to measure them for this vocoder", DEFAULT_MEAN, DEFAULT_STD)  # fmt: skip
    else:
        mean, std = clean_statistics(codec, manifest, max_files)
        codec = MelVocoderCodec(vocoder, replace(settings, latent_mean=mean, latent_std=std))
    return codec


def clean_statistics(
    codec: MelVocoderCodec, manifest: str | Path, max_files: int = 100
) -> tuple[float, float]:
    """Mean and standard deviation of ``codec``'s log-mels over the clean speech of up to
    ``max_files`` manifest entries (``reference``, else ``audio``), at the vocoder's rate."""
    from sealign.audio.io import AudioError, load_audio
    from sealign.codecs.base import CodecError, check_waveform
    from sealign.data.manifest import read_manifest

    frames = []
    for e in read_manifest(manifest)[:max_files]:
        try:
            wav, _ = load_audio(e.reference or e.audio, codec.sample_rate)
            wav = check_waveform(wav, codec.sample_rate, e.id, codec.settings.min_duration)
        except (AudioError, CodecError) as err:
            log.warning("statistics: skipping %s", err)
            continue
        frames.append(codec.log_mel(wav).ravel())
    if not frames:
        raise ValueError(f"{manifest}: no usable clean speech to measure the statistics on")
    values = np.concatenate(frames)
    return float(values.mean()), float(max(values.std(), 1e-3))
