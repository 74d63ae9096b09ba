"""The Policy protocol: everything the trainers (SFT, GSPO, DPO), ``enhance`` and ``eval`` need
from a generative speech-enhancement model, whatever its family.

Families and what one "step" of a rollout is:

- ``ar``  — autoregressive LM over codec tokens: a step is one generated token.
- ``mgm`` — masked generative model: a step is one token committed at one parallel-decoding
  iteration; its log-prob is taken given the partially masked state of that iteration.
- ``fm``  — flow matching sampled with an SDE: a step is one Euler–Maruyama transition, a
  Gaussian with closed-form log-density (Flow-GRPO).

Families whose steps run along the input's time axis (``ar``) also have ``step_seconds``, the
seconds of input one step covers (used by per-word reward credit,
:mod:`sealign.rewards.word_credit`); the others have no such attribute.

Trainers only see :class:`Rollout` (per-step log-probs and masks) and the methods below, so GSPO's
length-normalized sequence ratio ``exp(mean_t(logp_new - logp_old))`` and DPO's log-likelihood
differences are computed the same way for every family.
"""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from sealign.config import check_scalar

FAMILIES = ("ar", "mgm", "fm")


@dataclass
class Conditioning:
    """Features of a batch of noisy inputs, padded to a common length.

    ``features``: ``[B, T_c, D]``; ``mask``: ``[B, T_c]`` (True = valid frame); ``num_samples``:
    length in samples of each noisy input (outputs are trimmed to it); ``extra``: family-specific
    tensors.
    """

    features: torch.Tensor
    mask: torch.Tensor
    num_samples: list[int]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.features.shape[0]

    def select(self, index: torch.Tensor | list[int]) -> Conditioning:
        """Rows ``index`` (repeats allowed), e.g. to expand each input to a group of G samples."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.features.device)
        return Conditioning(
            self.features[idx],
            self.mask[idx],
            [self.num_samples[i] for i in idx.tolist()],
            {k: v[idx] for k, v in self.extra.items()},
        )

    def to(self, device: torch.device | str) -> Conditioning:
        return Conditioning(
            self.features.to(device),
            self.mask.to(device),
            list(self.num_samples),
            {k: v.to(device) for k, v in self.extra.items()},
        )


@dataclass
class Rollout:
    """Outputs sampled by a policy, with what is needed to recompute their log-probs.

    ``actions``: family payload (AR: ``tokens [N, T]``; MGM: the decoding trajectory; FM: the
    SDE states and noises). ``logp``: ``[N, S]`` per-step log-probs under the sampling policy
    (detached; 0 where ``mask`` is 0). ``mask``: ``[N, S]`` float, 1 for real steps. ``source``: for each output, the
    row of the :class:`Conditioning` it was sampled from.
    """

    actions: dict[str, torch.Tensor]
    logp: torch.Tensor
    mask: torch.Tensor
    source: torch.Tensor

    def __len__(self) -> int:
        return self.logp.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def select(self, index: torch.Tensor | list[int]) -> Rollout:
        idx = torch.as_tensor(index, dtype=torch.long, device=self.logp.device)
        return Rollout(
            {k: v[idx] for k, v in self.actions.items()},
            self.logp[idx],
            self.mask[idx],
            self.source[idx],
        )


@dataclass
class Targets:
    """Clean targets in the family's output space (AR/MGM: ``tokens [B, K, T]``; FM: ``latents
    [B, T, D]``) with a ``mask [B, T]`` of valid frames. ``extra``: per-frame tensors ``[B, T,
    ...]`` a family uses in training (e.g. the FM's clean content features for representation
    alignment)."""

    values: torch.Tensor
    mask: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """A generative SE model as trainers see it. Implementations are ``torch.nn.Module``s."""

    family: str
    sample_rate: int

    def condition(self, noisy: list[np.ndarray]) -> Conditioning:
        """Features of noisy waveforms (at :attr:`sample_rate`), batched and padded."""
        ...

    def encode_targets(self, clean: list[np.ndarray]) -> Targets:
        """Clean waveforms → targets in the model's output space (tokens or latents)."""
        ...

    def sample(
        self,
        cond: Conditioning,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> Rollout:
        """One output per row of ``cond`` (expand ``cond`` with :meth:`Conditioning.select` for
        groups), with per-step log-probs under the current parameters. No gradients."""
        ...

    def step_log_probs(
        self, cond: Conditioning, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Recompute ``[N, S]`` per-step log-probs of ``rollout`` under the current parameters
        (with gradients), and a per-step entropy estimate ``[N, S]``. ``cond`` is indexed by
        ``rollout.source``."""
        ...

    def decode(self, rollout: Rollout) -> list[np.ndarray]:
        """Waveforms of the sampled outputs, trimmed to their inputs' lengths."""
        ...

    def decode_targets(self, targets: Targets) -> list[np.ndarray]:
        """Waveforms of targets (e.g. of preference winners stored as tokens)."""
        ...

    def targets_from_rollout(self, rollout: Rollout) -> Targets:
        """The sampled outputs as :class:`Targets` (to store preference candidates)."""
        ...

    def sft_loss(self, cond: Conditioning, targets: Targets) -> torch.Tensor:
        """Supervised loss on clean targets: token cross-entropy (AR), masked-token
        cross-entropy with a random mask (MGM) or the flow-matching loss (FM)."""
        ...

    def preference_noise(
        self, targets: Targets, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Randomness that DPO must share between winner and loser and between policy and
        reference: MGM a mask ratio and mask, FM a time ``t`` and noise; AR nothing."""
        ...

    def preference_log_likelihood(
        self, cond: Conditioning, targets: Targets, noise: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``[B]`` log-likelihood (or proxy) used by DPO: AR the sequence log-prob, MGM the
        masked conditional log-prob over masked positions, FM minus the single-step
        flow-matching error ``-||v_θ(y_t, t) - u||²``."""
        ...

    def save(self, directory: str | Path) -> Path:
        """Weights (safetensors) + JSON config, enough for :func:`load_policy`."""
        ...


def step_passes(policy: Policy, rollout: Rollout) -> torch.Tensor:
    """``[N, S]`` index of the model pass in which :meth:`Policy.step_log_probs` computes each
    step (-1 where ``rollout.mask`` is 0): the decoding iteration for ``mgm``, the SDE step for
    ``fm``. A family without a ``step_passes`` method (``ar``: one teacher-forced pass) gives 0
    for every step."""
    method = getattr(policy, "step_passes", None)
    if method is not None:
        return method(rollout)
    return torch.where(rollout.mask > 0, 0, -1)


def keep_passes(
    rollout: Rollout, passes: torch.Tensor, fraction: float, generator: torch.Generator
) -> Rollout:
    """``rollout`` with its mask cut to the steps of a random ``ceil(fraction · P)`` of its
    ``P`` passes (at least one), so that :meth:`Policy.step_log_probs` can skip the others
    (Flow-GRPO trains on a fraction of the denoising steps the same way)."""
    n_pass = int(passes.max()) + 1 if passes.numel() else 0
    n_keep = max(1, math.ceil(fraction * n_pass - 1e-9))
    if n_pass <= 1 or n_keep >= n_pass:
        return rollout
    chosen = torch.randperm(n_pass, generator=generator)[:n_keep]
    keep = torch.isin(passes, chosen.to(passes.device)) & (passes >= 0)
    return Rollout(
        rollout.actions, rollout.logp, rollout.mask * keep.to(rollout.mask), rollout.source
    )


def check_sample_options(
    policy: Policy, options: dict[str, Any], where: str, named: bool = True
) -> None:
    """Fail, naming ``where``, if ``policy.sample`` has no parameter of one of ``options``
    (family samplers accept and ignore unknown keywords, so a typo would pass silently).
    ``named=False`` also accepts options a ``**kwargs`` of ``sample`` takes (options every
    caller passes, such as ``top_k``, that a sampler may ignore)."""
    var = inspect.Parameter.VAR_KEYWORD
    params = inspect.signature(policy.sample).parameters
    if not named and any(p.kind is var for p in params.values()):
        return
    unknown = sorted(k for k in options if k not in params or params[k].kind is var)
    if not unknown:
        try:
            hints = typing.get_type_hints(policy.sample)
        except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check
            hints = {}
        for k, v in options.items():
            if k in hints:
                check_scalar(v, hints[k], f"{where}.{k}")
    if unknown:
        known = [k for k, p in params.items() if p.kind is not var and k != "cond"]
        raise ValueError(
            f"{where}: {type(policy).__name__}.sample takes no option {', '.join(unknown)}; "
            f"it takes {', '.join(known)}"
        )


def sampling_steps(steps: Any, default: int, minimum: int = 1) -> int:
    """``steps`` (None: ``default``) as an int of at least ``minimum``, or ``ValueError``."""
    if steps is None:
        return default
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or int(steps) != steps:
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if steps < minimum:
        raise ValueError(f"steps must be ≥ {minimum}, got {steps}")
    return int(steps)
