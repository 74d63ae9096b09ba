"""Importing an original-layout HiFi-GAN generator as a ``mel_vocoder`` folder: SpeechT5HifiGan
for residual blocks of type 1 (V1, V2), sealign's HifiGanGenerator for type 2 (V3)."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sealign.cli import main
from sealign.codecs.base import CodecUnavailable, load_codec
from sealign.codecs.hifigan import import_hifigan

CONFIG = {
    "resblock": "1",
    "upsample_rates": [4, 2, 2],
    "upsample_kernel_sizes": [8, 4, 4],
    "upsample_initial_channel": 16,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "num_mels": 12,
    "n_fft": 64,
    "hop_size": 16,
    "win_size": 48,
    "sampling_rate": 8000,
    "fmin": 0,
    "fmax": 4000,
}
# V3's residual blocks (type 2: one dilated convolution per dilation) at the same small size
CONFIG_V3 = {**CONFIG, "resblock": "2", "resblock_dilation_sizes": [[1, 2], [2, 6]]}


class Generator(nn.Module):
    """HiFi-GAN's generator as the original code writes it (same module names, weight-normed
    layers, leaky ReLU 0.1 inside and torch's default 0.01 before the last convolution), with
    its ResBlock1 or ResBlock2."""

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
                # ResBlock1 reads three dilations, ResBlock2 two (any further ones are unused)
                used = ds[:2] if c["resblock"] == "2" else ds[:3]
                dilated = nn.ModuleList(
                    wn(nn.Conv1d(width, width, k, 1, dilation=d, padding=(k * d - d) // 2))
                    for d in used
                )
                if c["resblock"] == "2":
                    block.convs = dilated
                else:
                    block.convs1 = dilated
                    block.convs2 = nn.ModuleList(
                        wn(nn.Conv1d(width, width, k, 1, padding=(k - 1) // 2)) for _ in used
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
                if hasattr(block, "convs"):
                    for c in block.convs:
                        h = h + c(F.leaky_relu(h, 0.1))
                else:
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


# a V3 config whose lists hold a third dilation, which the original's ResBlock2 leaves unused
CONFIG_V3_LONG = {**CONFIG_V3, "resblock_dilation_sizes": [[1, 2, 4], [2, 6, 9]]}


@pytest.mark.parametrize("config", [CONFIG, CONFIG_V3, CONFIG_V3_LONG], ids=["v1", "v3", "v3-3"])
@pytest.mark.parametrize("style", ["parametrizations", "weight_g"])
def test_imported_vocoder_equals_the_original_generator(tmp_path, style, config):
    if style == "parametrizations":
        gen = write_generator(tmp_path, config=config)
    else:  # older torch's weight norm, deprecated: the keys of the published checkpoints
        with pytest.warns(FutureWarning):
            gen = write_generator(tmp_path, nn.utils.weight_norm, config=config)
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
    kind = "HifiGanGenerator" if config["resblock"] == "2" else "SpeechT5HifiGan"
    assert type(codec.vocoder).__name__ == kind
    # the saved folder loads back as the same vocoder, batched as well
    codec.save(tmp_path / "voc")
    again = load_codec(f"mel_vocoder:{tmp_path / 'voc'}")
    assert type(again.vocoder).__name__ == kind
    with torch.no_grad():
        torch.testing.assert_close(again.vocoder(mel[0].T), ref, atol=1e-5, rtol=1e-5)
        pair = again.vocoder(torch.stack([mel[0].T, mel[0].T]))
    assert pair.shape == (2, 40 * 16)
    torch.testing.assert_close(pair[1], ref, atol=1e-5, rtol=1e-5)


def test_a_saved_v3_folder_keeps_the_contract_and_is_checked_on_load(tmp_path):
    from sealign.codecs.hifigan_generator import HifiGanGenerator

    write_generator(tmp_path, config=CONFIG_V3)
    import_hifigan(tmp_path / "generator_v1", tmp_path / "config.json").save(tmp_path / "voc")
    voc = tmp_path / "voc"
    from sealign.models.conformance import check_codec, format_checks

    checks = check_codec(load_codec(f"mel_vocoder:{voc}"))  # the codec contract, reload included
    assert all(c.ok for c in checks), format_checks(checks)
    meta = json.loads((voc / "config.json").read_text())
    assert meta["model_type"] == "hifigan" and meta["resblock"] == "2"
    (voc / "config.json").write_text(json.dumps({**meta, "upsample_initial_channel": 32}))
    with pytest.raises(ValueError, match=r"shapes differ .*conv_pre.weight"):
        load_codec(f"mel_vocoder:{voc}")
    (voc / "config.json").write_text(json.dumps({**meta, "resblock": "3"}))
    with pytest.raises(ValueError, match="not a HiFi-GAN generator config .*resblock must be"):
        HifiGanGenerator.from_folder(voc)
    for bad in ({"upsample_rates": "442"}, {"resblock_dilation_sizes": [1, 2]},
                {"upsample_initial_channel": "16"}, {"transformers_version": "4.0"}):  # fmt: skip
        (voc / "config.json").write_text(json.dumps({**meta, **bad}))
        with pytest.raises(ValueError, match="not a HiFi-GAN generator config"):
            load_codec(f"mel_vocoder:{voc}")
    (voc / "config.json").write_text(json.dumps(meta))
    weights = (voc / "model.safetensors").read_bytes()
    (voc / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CodecUnavailable, match="model.safetensors: the generator's weights are"):
        load_codec(f"mel_vocoder:{voc}")
    (voc / "model.safetensors").unlink()
    (voc / "pytorch_model.bin").write_bytes(weights)  # the SpeechT5 folders' other file: not here
    with pytest.raises(FileNotFoundError, match=r"missing vocoder weights \(model.safetensors\)"):
        load_codec(f"mel_vocoder:{voc}")


def test_the_analysis_is_hifigans(tmp_path, caplog):
    """HiFi-GAN's mel as its own code computes it (torch.stft without centring after a reflect
    pad of (n_fft − hop) / 2, sqrt(power + 1e-9), Slaney mel filters over fmin–fmax, ln of
    max(mel, 1e-5)), over floor(n / hop) frames; the codec repeats the last one up to
    ceil(n / hop)."""
    write_generator(tmp_path)
    out = tmp_path / "voc"
    args = ["codec", "import-hifigan", "--checkpoint", str(tmp_path / "generator_v1"),
            "--config", str(tmp_path / "config.json"), "--output", str(out)]  # fmt: skip
    with caplog.at_level("WARNING", logger="sealign"):
        import_hifigan(tmp_path / "generator_v1", tmp_path / "config.json")
    assert "give clean speech of your own (--manifest)" in caplog.text
    assert main(args) == 0
    codec = load_codec(f"mel_vocoder:{out}")
    assert (codec.sample_rate, codec.hop, codec.n_fft, codec.win_length) == (8000, 16, 64, 48)
    assert codec.settings.center is False and codec.settings.log_base == "e"
    x = np.sin(np.arange(1000) * 0.3) * np.linspace(0, 1, 1000)
    x = (x + 0.01 * np.random.default_rng(0).standard_normal(1000)).astype(np.float32)
    y = F.pad(torch.as_tensor(x, dtype=torch.float64)[None, None], (24, 24), mode="reflect")
    window = torch.hann_window(48, dtype=torch.float64)
    spec = torch.stft(y[0], 64, hop_length=16, win_length=48, window=window, center=False,
                      return_complex=True).abs().pow(2).add(1e-9).sqrt()[0]  # fmt: skip
    basis = torch.as_tensor(librosa.filters.mel(sr=8000, n_fft=64, n_mels=12, fmin=0, fmax=4000))
    ref = torch.log(torch.clamp(basis.double() @ spec, min=1e-5)).numpy()
    ours = codec.log_mel(x)
    assert ref.shape == (12, 1000 // 16) and ours.shape == (12, -(-1000 // 16))
    np.testing.assert_allclose(ours[:, : ref.shape[1]], ref, atol=1e-5)
    np.testing.assert_array_equal(ours[:, -1], ours[:, -2])  # the frame past floor(n / hop)
    assert main(args) == 2  # an existing folder is not written over
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failed_import_leaves_no_folder(tmp_path, monkeypatch):
    from sealign.codecs.vocoder import MelVocoderCodec

    write_generator(tmp_path)

    def broken(self, directory):
        (directory / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(MelVocoderCodec, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        main(["codec", "import-hifigan", "--checkpoint", str(tmp_path / "generator_v1"),
              "--config", str(tmp_path / "config.json"), "--output", str(tmp_path / "voc")])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "generator_v1"]


def test_statistics_from_clean_speech(tmp_path, speech):
    import soundfile as sf

    write_generator(tmp_path)
    clean = [speech(0), speech(1, "en-us+f3")]
    lines = []
    for i, w in enumerate(clean):
        sf.write(tmp_path / f"c{i}.wav", w, 16000)
        lines.append(json.dumps({"id": f"c{i}", "audio": f"c{i}.wav"}))
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)  # skipped, logged
    lines.append(json.dumps({"id": "silent", "audio": "silent.wav"}))
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
        ({"resblock": "3"}, "residual blocks of type 1 and 2"),
        (
            {"resblock": "2"},
            r"missing: resblocks.0.convs.0.bias.*unexpected: resblocks.0.convs1",
        ),  # a V1 checkpoint
        ({"hop_size": 32}, "multiply to 16, but hop_size is 32"),
        ({"num_mels": None}, "missing HiFi-GAN settings: num_mels"),
        ({"num_mels": 10}, r"shapes differ .*conv_pre.weight \(16, 12, 7\) ≠ \(16, 10, 7\)"),
        (
            {"resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]},
            "unexpected: resblocks.3",
        ),  # fmt: skip
        ({"upsample_rates": 16}, "do not have HiFi-GAN's types .*: upsample_rates"),
        ({"num_mels": "80", "fmin": None}, "types .*: num_mels, fmin"),
        ({"resblock_dilation_sizes": [[1, 3]]}, "one list per resblock kernel size"),
        ({"resblock_dilation_sizes": [[1, 3], [1, 3]]}, "type 1 reads 3 dilations from each"),
    ],
)
def test_what_does_not_fit_is_named(tmp_path, change, match):
    write_generator(tmp_path)
    config = {k: v for k, v in {**CONFIG, **change}.items() if v is not None or k == "fmin"}
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


def test_the_generator_holds_type_1_blocks_too(tmp_path):
    """HifiGanGenerator's type-1 blocks (what SpeechT5HifiGan holds for an import) equal the
    original generator's with the same folded weights."""
    from sealign.codecs.hifigan import fold_weight_norm
    from sealign.codecs.hifigan_generator import HifiGanConfig, HifiGanGenerator

    gen = write_generator(tmp_path)
    ours = HifiGanGenerator(
        HifiGanConfig(
            model_in_dim=12,
            sampling_rate=8000,
            upsample_initial_channel=16,
            upsample_rates=[4, 2, 2],
            upsample_kernel_sizes=[8, 4, 4],
            resblock_kernel_sizes=[3, 5],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
        )
    )
    ours.load_state_dict(fold_weight_norm(gen.state_dict()))
    mel = torch.randn(1, 12, 30, generator=torch.Generator().manual_seed(2)) - 4
    with torch.no_grad():
        torch.testing.assert_close(
            ours.eval()(mel[0].T), gen(mel).reshape(-1), atol=1e-5, rtol=1e-5
        )
