"""A Hugging Face ``transformers`` causal decoder as a sealign AR policy.

The complete version of the sketch in ``docs/custom_models.md``: any decoder that
``transformers.AutoModel`` builds (Llama, Qwen2, GPT-2, ...) generates single-codebook codec
tokens, one per codec frame, reading the noisy input through frame-aligned additive
conditioning (the noisy log-mels, and Whisper encoder frames with ``content: whisper``, of the
frames up to the one being generated). Sampling runs on the decoder's KV cache; log-probs are
recomputed teacher-forced under the same temperature / top-k / top-p transform, so GSPO's ratio
is exactly 1 at unchanged weights. The tests (``tests/test_hf_decoder_example.py``) run it
through ``sealign check``, ``train``, ``gspo``, ``prefs``, ``dpo``, ``export`` and ``enhance``.

Build a base and save it (``--backbone`` is a JSON config, a local folder or a hub id of a
pretrained decoder; the codec any sealign codec spec with one codebook)::

    PYTHONPATH=examples python examples/hf_decoder_policy.py --codec world:src/sealign/assets/ar_demo/codec \\
        --backbone '{"model_type": "llama", "hidden_size": 256, "intermediate_size": 768,
                     "num_hidden_layers": 6, "num_attention_heads": 4,
                     "num_key_value_heads": 4, "vocab_size": 8}' --output runs/hf_base

then every command takes the folder, with the module importable (``PYTHONPATH=examples``)::

    PYTHONPATH=examples sealign train --output runs/hf_sft model.init_from=runs/hf_base ...
    PYTHONPATH=examples sealign gspo --config configs/gspo_demo.yaml model.init_from=runs/hf_sft
    PYTHONPATH=examples sealign check --model runs/hf_base   # the protocol's properties

A pretrained decoder's own token table (``embed_tokens``) is not used, since codec tokens
arrive as embeddings, but it stays in the saved weights (about 136 M parameters for
Qwen2-0.5B); drop or shrink it before saving if disk matters. Inputs longer than the decoder's
``max_position_embeddings`` codec frames are refused; ``sealign enhance`` chunks long files.
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sealign.codecs.base import Codec, codebook_sizes, load_codec
from sealign.models.ar import SamplingTransform, sampling_settings
from sealign.models.backbone import check_framing, codec_features
from sealign.models.features import FeatureConfig, compute_features
from sealign.models.persist import fit_length, read_policy_dir, save_policy_dir
from sealign.models.policy import Conditioning, Rollout, Targets
from sealign.models.tokens import check_sampling, decode_token_rows, encode_token_targets
from sealign.plugins import load_plugins

FORMAT_VERSION = 1
# the import path load_policy uses, also when this file runs as a script
_MODULE = Path(__file__).stem if __name__ == "__main__" else __name__


def build_decoder(backbone: dict[str, Any] | str) -> torch.nn.Module:
    """A ``transformers`` decoder from a config dict (random weights; ``model_type`` picks the
    architecture) or from a local folder / hub id of a pretrained one."""
    from transformers import AutoConfig, AutoModel

    if isinstance(backbone, str):
        if backbone.startswith(("/", ".", "~")) and not Path(backbone).expanduser().is_dir():
            raise ValueError(f"decoder folder {backbone!r} not found")
        try:
            return AutoModel.from_pretrained(backbone)
        except (OSError, ValueError) as err:  # no config / weights, no network, unknown id
            raise ValueError(
                f"cannot load the decoder {backbone!r} ({err}); give a local folder written by "
                "save_pretrained (config.json + weights) or, online, a hub id"
            ) from err
    d = dict(backbone)
    if "model_type" not in d:
        raise ValueError("backbone config needs a 'model_type' (e.g. 'llama')")
    return AutoModel.from_config(AutoConfig.for_model(d.pop("model_type"), **d))


class HFDecoderPolicy(torch.nn.Module):
    """Single-codebook codec-token LM on a ``transformers`` decoder (family ``"ar"``).

    Input at step ``t``: the embedding of token ``t - 1`` (a BOS index at ``t = 0``) plus a
    projection of the noisy input's feature frames of codec frames ``t - lookahead`` to
    ``t + lookahead`` (the whole noisy input is known before generation starts, so the
    conditioning may look ahead; a convolution over the projected frames, zero past each
    row's end so that a row's states never depend on the rows batched with it).
    """

    family = "ar"

    def __init__(
        self,
        codec: Codec,
        backbone: dict[str, Any] | str,
        features: FeatureConfig | dict[str, Any] | None = None,
        codec_spec: str | None = None,
        lookahead: int = 2,
    ) -> None:
        super().__init__()
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        sizes = codebook_sizes(codec)
        if len(sizes) != 1:
            raise ValueError(f"this example needs a one-codebook codec, got {len(sizes)}")
        fc = features if isinstance(features, FeatureConfig) else codec_features(codec, features)
        check_framing(fc, codec)
        self.__dict__["codec"] = codec  # not a submodule: the codec stays frozen and unsaved
        self.codec_spec, self.features, self.vocab = codec_spec, fc, sizes[0]
        self.sample_rate = int(codec.sample_rate)
        # float32 whatever the checkpoint stores (transformers 5 keeps a bf16 checkpoint in
        # bf16, which the float32 layers around it cannot multiply); bf16 runs use autocast
        self.decoder = build_decoder(backbone).float()
        self.max_frames = int(getattr(self.decoder.config, "max_position_embeddings", 1 << 30))
        # transformers 5.x names the KV cache argument `cache`, earlier versions `past_key_values`
        params = inspect.signature(self.decoder.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        dim = self.decoder.config.hidden_size
        self.embed = torch.nn.Embedding(self.vocab + 1, dim)  # last index = BOS
        self.cond = torch.nn.Linear(fc.frames_per_token * fc.dim, dim)
        self.lookahead = lookahead
        self.context = (
            torch.nn.Conv1d(dim, dim, 2 * lookahead + 1, padding=lookahead) if lookahead else None
        )
        self.head = torch.nn.Linear(dim, self.vocab, bias=False)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def step_seconds(self) -> float:
        """Codec frame ``t`` covers input time ``[t, t + 1) · step_seconds`` (word credit)."""
        return self.features.token_samples / self.sample_rate

    # ---------------------------------------------------------------- conditioning and targets

    def condition(self, noisy: list[np.ndarray]) -> Conditioning:
        return compute_features(noisy, self.features, None, str(self.device)).to(self.device)

    def encode_targets(self, clean: list[np.ndarray]) -> Targets:
        return encode_token_targets(self.codec, clean, self.features, 1, self.device)

    def _frames(self, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, dim]`` conditioning per codec frame and its ``[B, T]`` validity mask."""
        # the width comes from the padded features, not from these rows' lengths: a minibatch
        # of a group's shorter inputs keeps the rollout's token width (Rollout.select)
        b, tc, _ = cond.features.shape
        fpt = self.features.frames_per_token
        t = tc // fpt
        if t > self.max_frames:
            raise ValueError(
                f"{t} codec frames exceed the decoder's {self.max_frames} positions; enhance "
                "chunks long inputs (enhance.chunk_seconds)"
            )
        lengths = torch.tensor([self.features.num_tokens(n) for n in cond.num_samples])
        valid = (torch.arange(t) < lengths[:, None]).to(self.device)
        states = self.cond(cond.features.reshape(b, t, -1))
        if self.context is not None:
            states = states * valid[..., None]  # past a row's end: zeros, as the conv pads
            states = states + self.context(states.transpose(1, 2)).transpose(1, 2)
        return states, valid

    def _teacher_forced(self, cond: Conditioning, tokens: torch.Tensor) -> torch.Tensor:
        """``[N, T, V]`` logits of ``tokens [N, T]`` given the previous ones."""
        states, _ = self._frames(cond)
        bos = torch.full_like(tokens[:, :1], self.vocab)
        prev = torch.cat([bos, tokens[:, :-1]], dim=1)
        x = self.embed(prev) + states[:, : tokens.shape[1]]
        return self.head(self.decoder(inputs_embeds=x, use_cache=False).last_hidden_state)

    # ---------------------------------------------------------------- sampling and log-probs

    def sample(
        self,
        cond: Conditioning,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
    ) -> Rollout:
        """One token sequence per row of ``cond``, frame by frame on the decoder's KV cache."""
        check_sampling(temperature, top_k, top_p)
        n = len(cond)
        settings = sampling_settings(n, temperature, int(top_k), top_p).to(self.device)
        warp = SamplingTransform(settings, self.vocab, self.device)
        was_training = self.training
        self.eval()  # no dropout: the log-probs must be those step_log_probs recomputes
        try:
            tokens, logp, valid = self._generate(cond, warp, generator)
        finally:
            self.train(was_training)
        mask = valid.float()
        actions = {
            "tokens": tokens * valid,
            "sampling": settings,
            "num_samples": torch.tensor(cond.num_samples, dtype=torch.long, device=self.device),
        }
        return Rollout(actions, logp * mask, mask, torch.arange(n, device=self.device))

    def _generate(
        self, cond: Conditioning, warp: SamplingTransform, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoding loop: ``tokens [N, T]``, ``logp [N, T]``, validity ``[N, T]``."""
        n = len(cond)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        with torch.inference_mode():
            states, valid = self._frames(cond)
            t_max = states.shape[1]
            tokens = torch.zeros(n, t_max, dtype=torch.long, device=self.device)
            logp = torch.zeros(n, t_max, device=self.device)
            prev = torch.full((n,), self.vocab, dtype=torch.long, device=self.device)
            past = None
            for t in range(t_max):
                x = (self.embed(prev) + states[:, t])[:, None]
                out = self.decoder(inputs_embeds=x, use_cache=True, **{self._cache_arg: past})
                past = out.cache if hasattr(out, "cache") else out.past_key_values
                u = torch.rand(n, generator=generator, device=gen_device).to(self.device)
                tokens[:, t], logp[:, t] = warp.sample(self.head(out.last_hidden_state[:, -1]), u)
                prev = tokens[:, t]
        # clones made outside inference mode are ordinary tensors, usable in autograd later
        return tokens.clone(), logp.clone(), valid.clone()

    def step_log_probs(
        self, cond: Conditioning, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = rollout.actions["tokens"]
        logits = self._teacher_forced(cond.select(rollout.source.cpu()), tokens)
        warp = SamplingTransform(rollout.actions["sampling"], self.vocab, self.device)
        logp, keep = warp(logits, force=tokens)
        safe = logp if keep is None else logp.masked_fill(~keep, 0.0)
        entropy = -(safe.exp() * safe).sum(-1)
        lp = logp.gather(-1, tokens[..., None])[..., 0]
        return lp * rollout.mask, entropy * rollout.mask

    # ---------------------------------------------------------------- audio

    def _decode(self, tokens: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
        rows = tokens.reshape(tokens.shape[0], 1, -1).cpu().numpy()
        return decode_token_rows(self.codec, rows, lengths, self.features.token_samples)

    def decode(self, rollout: Rollout) -> list[np.ndarray]:
        lengths = rollout.mask.sum(dim=1).round().long().tolist()
        wavs = self._decode(rollout.actions["tokens"], lengths)
        num = rollout.actions["num_samples"].tolist()
        return [fit_length(w, k) for w, k in zip(wavs, num, strict=True)]

    def decode_targets(self, targets: Targets) -> list[np.ndarray]:
        return self._decode(targets.values, targets.mask.sum(dim=1).long().tolist())

    def targets_from_rollout(self, rollout: Rollout) -> Targets:
        return Targets(rollout.actions["tokens"][:, None], rollout.mask.bool())

    # ---------------------------------------------------------------- training objectives

    def sft_loss(self, cond: Conditioning, targets: Targets) -> torch.Tensor:
        tokens = targets.values[:, 0]
        logits = self._teacher_forced(cond, tokens)
        valid = targets.mask.to(self.device).bool()
        return F.cross_entropy(logits[valid], tokens[valid])

    def preference_noise(
        self, targets: Targets, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        return {}  # the sequence log-prob is exact: nothing random to share

    def preference_log_likelihood(
        self, cond: Conditioning, targets: Targets, noise: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        tokens = targets.values[:, 0]
        logp = F.log_softmax(self._teacher_forced(cond, tokens), dim=-1)
        lp = logp.gather(-1, tokens[..., None])[..., 0]
        return (lp * targets.mask.to(self.device, lp.dtype)).sum(dim=1)

    # ---------------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> Path:
        config = {
            "backbone": self.decoder.config.to_dict(),
            "features": self.features.to_dict(),
            "lookahead": self.lookahead,
        }
        return save_policy_dir(
            directory, self, self.family, config, self.codec, self.codec_spec, FORMAT_VERSION,
            policy_class=f"{_MODULE}:{type(self).__name__}",
        )  # fmt: skip

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu"):
        config, codec, spec, state = read_policy_dir(
            directory, cls.family, FORMAT_VERSION, map_location
        )
        features = FeatureConfig(**config["features"])
        lookahead = int(config.get("lookahead", 0))
        policy = cls(codec, config["backbone"], features, codec_spec=spec, lookahead=lookahead)
        policy.load_state_dict(state)
        return policy.to(map_location)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="build and save an HFDecoderPolicy base")
    p.add_argument("--codec", required=True, help="codec spec, e.g. world:runs/codec")
    p.add_argument("--backbone", required=True, help="JSON config, local folder or hub id")
    p.add_argument("--features", default="{}", help="JSON FeatureConfig fields (n_mels...)")
    p.add_argument("--lookahead", type=int, default=2, help="codec frames of future context")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    load_plugins()  # a codec of your own, registered by a module in $SEALIGN_PLUGINS
    backbone = args.backbone.strip()
    torch.manual_seed(args.seed)
    policy = HFDecoderPolicy(
        load_codec(args.codec),
        json.loads(backbone) if backbone.startswith("{") else backbone,
        json.loads(args.features),
        lookahead=args.lookahead,
    )
    out = policy.save(args.output)
    n = sum(p.numel() for p in policy.parameters())
    print(f"saved {out} ({n / 1e6:.2f} M parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
