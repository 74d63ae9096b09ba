"""Importing an original-layout HiFi-GAN generator as a SpeechT5HifiGan ``mel_vocoder`` folder."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sealign.cli import main
from sealign.codecs.base import load_codec
from sealign.codecs.hifigan import import_hifigan

CONFIG = {
    "resblock": "1",
    "upsample_rates": [4, 2, 2],
    "upsample_kernel_sizes": [8, 4, 4],
    "upsample_initial_channel": 16,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3], [1, 3]],
    "num_mels": 12,
    "n_fft": 64,
    "hop_size": 16,
    "win_size": 48,
    "sampling_rate": 8000,
    "fmin": 0,
    "fmax": 4000,
}


class Generator(nn.Module):
    """HiFi-GAN V1's generator as the original code writes it (same module names, weight-normed
    layers, leaky ReLU 0.1 inside and torch's default 0.01 before the last convolution)."""

    def __init__(self, c: dict, wn) -> None:
        super().__init__()
        ch = c["upsample_initial_channel"]
        self.conv_pre = wn(nn.Conv1d(c["num_mels"], ch, 7, 1, padding=3))
        self.ups = nn.ModuleList(
            wn(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(
                zip(c["upsample_rates"], c["upsample_kernel_sizes"], strict=True)
            )
        )
        self.kernels = len(c["resblock_kernel_sizes"])
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            width = ch // 2 ** (i + 1)
            for k, ds in zip(c["resblock_kernel_sizes"], c["resblock_dilation_sizes"], strict=True):
                block = nn.Module()
                block.convs1 = nn.ModuleList(
                    wn(nn.Conv1d(width, width, k, 1, dilation=d, padding=(k * d - d) // 2))
                    for d in ds
                )
                block.convs2 = nn.ModuleList(
                    wn(nn.Conv1d(width, width, k, 1, padding=(k - 1) // 2)) for _ in ds
                )
                self.resblocks.append(block)
        self.conv_post = wn(nn.Conv1d(width, 1, 7, 1, padding=3))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            total = 0
            for block in self.resblocks[i * self.kernels : (i + 1) * self.kernels]:
                h = x
                for c1, c2 in zip(block.convs1, block.convs2, strict=True):
                    h = h + c2(F.leaky_relu(c1(F.leaky_relu(h, 0.1)), 0.1))
                total = total + h
            x = total / self.kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def write_generator(tmp_path, wn=nn.utils.parametrizations.weight_norm, config=CONFIG):
    torch.manual_seed(0)
    gen = Generator(config, wn)
    with torch.no_grad():  # gains away from 1, so that an unfolded norm would show
        for name, p in gen.named_parameters():
            if name.endswith(("weight_g", "original0")):
                p.mul_(torch.rand_like(p) + 0.5)
    torch.save({"generator": gen.state_dict()}, tmp_path / "generator_v1")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return gen.eval()


@pytest.mark.parametrize("style", ["parametrizations", "weight_g"])
def test_imported_vocoder_equals_the_original_generator(tmp_path, style):
    if style == "parametrizations":
        gen = write_generator(tmp_path)
    else:  # older torch's weight norm, deprecated: the keys of the published checkpoints
        with pytest.warns(FutureWarning):
            gen = write_generator(tmp_path, nn.utils.weight_norm)
    key = (
        "conv_pre.weight_g" if style == "weight_g" else "conv_pre.parametrizations.weight.original0"
    )
    assert key in torch.load(tmp_path / "generator_v1")["generator"]
    codec = import_hifigan(tmp_path / "generator_v1", tmp_path / "config.json")
    mel = torch.randn(1, 12, 40, generator=torch.Generator().manual_seed(1)) - 4
    with torch.no_grad():
        ref = gen(mel).reshape(-1)
        ours = codec.vocoder(mel[0].T)
    assert ours.shape == ref.shape == (40 * 16,)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # the codec decodes standardized latents with the same vocoder
    s = codec.settings
    lat = ((mel[0] - s.latent_mean) / s.latent_std).numpy()
    np.testing.assert_allclose(codec.decode_latent(lat), ref.numpy(), atol=1e-5)


def test_the_analysis_is_hifigans(tmp_path):
    """HiFi-GAN's mel: reflect padding of (n_fft − hop) / 2, no centring, magnitude, Slaney mel
    filters over fmin–fmax, ln(max(mel, 1e-5)); ceil(n / hop) frames."""
    write_generator(tmp_path)
    out = tmp_path / "voc"
    assert main(["codec", "import-hifigan", "--checkpoint", str(tmp_path / "generator_v1"),
                 "--config", str(tmp_path / "config.json"), "--output", str(out)]) == 0  # fmt: skip
    codec = load_codec(f"mel_vocoder:{out}")
    assert (codec.sample_rate, codec.hop, codec.n_fft, codec.win_length) == (8000, 16, 64, 48)
    assert codec.settings.center is False and codec.settings.log_base == "e"
    x = np.sin(np.arange(1000) * 0.3) * np.linspace(0, 1, 1000)
    x = (x + 0.01 * np.random.default_rng(0).standard_normal(1000)).astype(np.float32)
    pad = (64 - 16) // 2
    spec = np.abs(librosa.stft(np.pad(x.astype(np.float64), pad, mode="reflect"), n_fft=64,
                               hop_length=16, win_length=48, window="hann", center=False))  # fmt: skip
    basis = librosa.filters.mel(sr=8000, n_fft=64, n_mels=12, fmin=0, fmax=4000)
    ref = np.log(np.maximum(basis @ spec, 1e-5))
    ours = codec.log_mel(x)
    assert ours.shape == (12, -(-1000 // 16))
    n = ref.shape[1]
    np.testing.assert_allclose(ours[:, :n], ref, atol=1e-6)
    assert main(["codec", "import-hifigan", "--checkpoint", str(tmp_path / "generator_v1"),
                 "--config", str(tmp_path / "config.json"), "--output", str(out)]) == 2  # fmt: skip


def test_statistics_from_clean_speech(tmp_path, speech):
    import soundfile as sf

    write_generator(tmp_path)
    clean = [speech(0), speech(1, "en-us+f3")]
    lines = []
    for i, w in enumerate(clean):
        sf.write(tmp_path / f"c{i}.wav", w, 16000)
        lines.append(json.dumps({"id": f"c{i}", "audio": f"c{i}.wav"}))
    (tmp_path / "clean.jsonl").write_text("\n".join(lines) + "\n")
    codec = import_hifigan(tmp_path / "generator_v1", tmp_path / "config.json",
                           tmp_path / "clean.jsonl")  # fmt: skip
    values = np.concatenate(
        [codec.log_mel(librosa.resample(w, orig_sr=16000, target_sr=8000)).ravel()
         for w in clean]
    )  # fmt: skip
    assert codec.settings.latent_mean == pytest.approx(values.mean(), abs=0.05)
    assert codec.settings.latent_std == pytest.approx(values.std(), rel=0.02)
    z = np.concatenate([codec.encode_latent(librosa.resample(w, orig_sr=16000, target_sr=8000))
                        for w in clean], axis=1)  # fmt: skip
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"resblock": "2"}, "block 2 cannot be imported"),
        ({"hop_size": 32}, "multiply to 16, but hop_size is 32"),
        ({"num_mels": None}, "missing HiFi-GAN settings: num_mels"),
        ({"num_mels": 10}, r"shapes differ .*conv_pre.weight \(16, 12, 7\) ≠ \(16, 10, 7\)"),
        ({"resblock_kernel_sizes": [3]}, "unexpected: resblocks.3"),
    ],
)
def test_what_does_not_fit_is_named(tmp_path, change, match):
    write_generator(tmp_path)
    config = {k: v for k, v in {**CONFIG, **change}.items() if v is not None}
    if change.get("resblock_kernel_sizes"):
        config["resblock_dilation_sizes"] = [[1, 3]]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        import_hifigan(tmp_path / "generator_v1", tmp_path / "config.json")


def test_unreadable_or_foreign_checkpoints(tmp_path):
    write_generator(tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        import_hifigan(tmp_path / "nope", tmp_path / "config.json")
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        import_hifigan(tmp_path / "junk", tmp_path / "config.json")
    torch.save({"generator": [1, 2]}, tmp_path / "list")
    with pytest.raises(ValueError, match="expected a generator state dict"):
        import_hifigan(tmp_path / "list", tmp_path / "config.json")
    state = torch.load(tmp_path / "generator_v1")["generator"]
    del state["conv_pre.parametrizations.weight.original0"]
    torch.save(state, tmp_path / "half")  # a bare state dict is accepted, but this one is broken
    with pytest.raises(ValueError, match="has no weight-norm gain beside it"):
        import_hifigan(tmp_path / "half", tmp_path / "config.json")
