"""Low-rank adapters (LoRA; Hu et al. 2021) on a policy's linear and 1-D convolution layers.

:func:`apply_lora` replaces each linear layer (``nn.Linear``, or the transposed ``Conv1D`` of
GPT-2 in ``transformers``) or ungrouped ``nn.Conv1d`` whose attribute name is in ``targets`` by
a :class:`LoRALinear`: the frozen layer plus a trainable low-rank update ``(alpha / rank) · B A``
(``A`` random, ``B`` zero, so training starts from the unchanged policy), and freezes every
other parameter except those of the modules named in ``modules_to_save``, which train in full
(a frozen copy of each is kept for :func:`adapters_off`, so the base stays at hand without a
second copy of the whole policy). A wrapped layer's ``weight`` is the merged matrix, so code
that reads ``.weight`` (the built-in policies' fast decoding weights) sees the adapted layer,
and its ``state_dict``
holds the merged weight under the original key: ``policy.save`` writes a plain checkpoint that
loads, evaluates and exports like any other. What trains, unmerged (:func:`adapter_state`: the
adapters, and a learned temperature if there is one), is what a trainer checkpoint keeps to
resume exactly: the base policy again, the same adapters on it (:func:`check_merged` verifies).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_TARGETS = ("qkv", "proj", "mlp_in", "mlp_out")  # the built-in transformer blocks' layers
# (parent, attribute, trained module, its frozen base copy) of each module trained in full, kept
# on the wrapped root as a plain attribute: not a submodule, so not in its parameters or state
FROZEN_ATTR = "_lora_frozen_modules"
TIED_ATTR = "_lora_tied_outside"  # a layer outside the modules trained in full that shares theirs


@dataclass
class LoRAConfig:
    """``rank`` 0 trains every weight (no adapters). ``targets``: attribute names of the linear
    or ungrouped 1-D convolution layers to adapt (``qkv``, ``proj``, ``mlp_in``, ``mlp_out`` are
    the built-in blocks'; a wrapped model's own names otherwise, e.g. ``q_proj``).
    ``modules_to_save``: attribute names of modules that train in full beside the adapters
    (PEFT's name), e.g. an output head or the FM's REPA projection ``repa_proj``."""

    rank: int = 0
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    modules_to_save: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError(f"lora.rank must be >= 0, got {self.rank}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        if self.rank and not self.targets:
            raise ValueError("lora.targets: name at least one layer to adapt")

    @property
    def enabled(self) -> bool:
        return self.rank > 0


def _is_conv1d(module: nn.Module) -> bool:
    """``transformers``' ``Conv1D`` (GPT-2): a linear layer whose weight is stored [in, out]."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def _is_linear(module: nn.Module) -> bool:
    """A layer that takes adapters: linear (``nn.Linear``, GPT-2's ``Conv1D``) or an ungrouped
    1-D convolution whose class keeps ``nn.Conv1d``'s forward (the low-rank path repeats it)."""
    if isinstance(module, nn.Conv1d):
        return module.groups == 1 and type(module).forward is nn.Conv1d.forward
    return isinstance(module, nn.Linear) or _is_conv1d(module)


def _reparametrized(module: nn.Module) -> bool:
    """A weight computed from other parameters (weight norm, old or new style): its merged
    state dict could not be written under the layer's own keys."""
    from torch.nn.utils import parametrize

    return parametrize.is_parametrized(module) or hasattr(module, "weight_g")


# what a wrapped layer passes through from its base layer, for code that reads them
BASE_ATTRIBUTES = frozenset({
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
    "padding_mode", "nf", "nx",
})  # fmt: skip


class LoRALinear(nn.Module):
    """``base`` (frozen) plus ``scale · lora_b @ lora_a``; ``base`` an ``nn.Linear``, a
    ``Conv1D``, whose merged ``weight`` keeps its [in, out] layout, or an ungrouped
    ``nn.Conv1d``, whose ``[out, in, kernel]`` weight is adapted as the ``[out, in · kernel]``
    matrix it is (``in_features`` is then ``in · kernel``) and whose stride, padding and dilation
    the low-rank path shares."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        if isinstance(base, nn.Conv1d) and not _is_linear(base):
            raise ValueError("a grouped convolution, or a Conv1d subclass with its own forward, "
                             "cannot take LoRA adapters")  # fmt: skip
        if _reparametrized(base):
            raise ValueError("a weight-normalized (parametrized) layer cannot take LoRA adapters")
        self.base = base.requires_grad_(False)
        self.transposed = _is_conv1d(base)
        self.conv = isinstance(base, nn.Conv1d)
        self.scale = alpha / rank
        w: torch.Tensor = base.weight  # type: ignore[assignment]
        dev, dtype = w.device, w.dtype
        a = torch.empty(rank, self.in_features, dtype=dtype)
        bound = 1.0 / math.sqrt(self.in_features)  # nn.Linear's (kaiming uniform, a = √5)
        a.uniform_(-bound, bound, generator=generator)
        self.lora_a = nn.Parameter(a.to(dev))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, dtype=dtype, device=dev))
        self.enabled = True  # False: the base layer alone (see adapters_off)
        self.register_state_dict_post_hook(_merged_state)

    @property
    def weight(self) -> torch.Tensor:
        w: torch.Tensor = self.base.weight  # type: ignore[assignment]
        if not self.enabled:
            return w
        delta = self.scale * (self.lora_b @ self.lora_a)
        return w + (delta.T if self.transposed else delta.view_as(w))

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in BASE_ATTRIBUTES and name != "base":
                return getattr(super().__getattr__("base"), name)
            raise

    @property
    def in_features(self) -> int:
        w: torch.Tensor = self.base.weight  # type: ignore[assignment]
        return w.shape[0] if self.transposed else w[0].numel()

    @property
    def out_features(self) -> int:
        return self.base.weight.shape[1 if self.transposed else 0]  # type: ignore[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # unmerged: autograd keeps x and the rank-r product, never a full-size merged matrix
        y = self.base(x)
        if not self.enabled:
            return y
        if self.conv:  # A as `rank` filters with the base's stride, padding and dilation, B 1×1
            a = self.lora_a.view(self.lora_a.shape[0], *self.base.weight.shape[1:])
            low = self.base._conv_forward(x, a, None)  # type: ignore[operator]
            return y + self.scale * F.conv1d(low, self.lora_b[:, :, None])
        return y + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)


def _merged_state(module: LoRALinear, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    """The state dict of the plain layer (``nn.Linear``, ``Conv1D``, ``nn.Conv1d``) with the
    merged weight."""
    for key in ("base.weight", "base.bias", "lora_a", "lora_b"):
        state.pop(prefix + key, None)
    state[prefix + "weight"] = module.weight.detach()
    if module.bias is not None:
        state[prefix + "bias"] = module.bias.detach()


def apply_lora(module: nn.Module, cfg: LoRAConfig, seed: int = 0) -> int:
    """Wrap ``module``'s linear and ungrouped 1-D convolution layers named in ``cfg.targets``
    (:class:`LoRALinear`), unfreeze the modules named in ``cfg.modules_to_save`` (keeping a
    frozen copy of each) and freeze everything else; returns how many layers were wrapped.
    ``seed`` draws the ``A`` matrices (the same on every data-parallel rank)."""
    if any(isinstance(m, LoRALinear) for m in module.modules()):
        raise ValueError("this policy already has LoRA adapters")
    found: list[tuple[nn.Module, str, nn.Module]] = []
    full: list[tuple[nn.Module, str, nn.Module]] = []
    linear_names, child_names, refused = set(), set(), {}
    for parent in module.modules():
        for name, child in parent.named_children():
            child_names.add(name)
            adaptable = _is_linear(child) and not _reparametrized(child)
            if isinstance(child, nn.Conv1d) and not _is_linear(child):
                refused[name] = "grouped convolutions and Conv1d subclasses with their own " \
                    "forward take no adapters"  # fmt: skip
            elif _is_linear(child) and not adaptable:
                refused[name] = "weight-normalized layers take no adapters"
            if name in cfg.modules_to_save:
                full.append((parent, name, child))
            if adaptable:
                linear_names.add(name)
                if name in cfg.targets:
                    found.append((parent, name, child))
    unmatched = [t for t in cfg.targets if t not in linear_names]
    if unmatched:
        why = "".join(f" ({t}: {refused[t]})" for t in unmatched if t in refused)
        raise ValueError(
            f"lora.targets: {', '.join(unmatched)} name no linear or ungrouped 1-D convolution "
            f"layer of this {type(module).__name__}{why}; those it has are named "
            f"{', '.join(sorted(linear_names)) or '(none)'}"
        )
    unmatched = [t for t in cfg.modules_to_save if t not in child_names]
    if unmatched:
        raise ValueError(
            f"lora.modules_to_save: {', '.join(unmatched)} name no module of this "
            f"{type(module).__name__}; its modules are named {', '.join(sorted(child_names))}"
        )
    targets = {id(child) for _, _, child in found}
    for _, _, m in full:
        if any(id(sub) in targets for sub in m.modules()):
            raise ValueError("lora.modules_to_save: a module that trains in full cannot hold "
                             "adapted layers (lora.targets); name one or the other")  # fmt: skip
    object.__setattr__(module, TIED_ATTR, _shared_outside(module, full))
    module.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    for parent, name, child in found:
        setattr(parent, name, LoRALinear(child, cfg.rank, cfg.alpha, gen))
    frozen = [(parent, name, m, copy.deepcopy(m)) for parent, name, m in full]
    object.__setattr__(module, FROZEN_ATTR, frozen)  # bypasses nn.Module's registration
    for _, _, m, _ in frozen:
        m.requires_grad_(True)
    return len(found)


def _shared_outside(module: nn.Module, full: list[tuple[nn.Module, str, nn.Module]]) -> str | None:
    """The name of a layer outside the modules trained in full that shares a parameter with
    them (an output head tied to the embedding), or None. Such a layer trains with them, and
    swapping in their frozen copies would leave it trained: the reference is then loaded."""
    inside = {id(p) for _, _, m in full for p in m.parameters()}
    owners = {id(m) for _, _, m in full for m in m.modules()}
    for name, sub in module.named_modules(remove_duplicate=False):
        if id(sub) not in owners and any(id(p) in inside for p in sub.parameters(recurse=False)):
            return name or type(module).__name__
    return None


def base_is_at_hand(module: nn.Module) -> bool:
    """Whether :func:`adapters_off` makes ``module`` its base: not when a module trained in full
    shares weights with a layer outside it (tied weights), see :func:`apply_lora`."""
    return getattr(module, TIED_ATTR, None) is None


@contextmanager
def adapters_off(module: nn.Module) -> Iterator[None]:
    """``module`` computes as its base inside the block: its adapted layers without their
    adapters, and each module trained in full (``modules_to_save``) swapped for the frozen copy
    :func:`apply_lora` kept of it, in the trained module's train / eval mode. Nested blocks leave
    the state as they found it."""
    wrapped = [m for m in module.modules() if isinstance(m, LoRALinear)]
    frozen: list[tuple[nn.Module, str, nn.Module, nn.Module]] = getattr(module, FROZEN_ATTR, [])
    enabled = [(m, m.enabled) for m in wrapped]
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for m in wrapped:
            m.enabled = False
        for parent, name, trained, base in frozen:
            if getattr(parent, name) is not trained:  # swapped already by an enclosing block
                continue
            p = next(trained.parameters(), None)
            if p is not None:  # the policy may have moved since the copy was made
                base.to(device=p.device, dtype=p.dtype)
            base.train(trained.training)
            setattr(parent, name, base)
            swapped.append((parent, name, trained))
        yield
    finally:
        for m, on in enabled:
            m.enabled = on
        for parent, name, trained in reversed(swapped):
            setattr(parent, name, trained)


class BaseView:
    """A policy with adapters seen without them: a reference (GSPO's KL, DPO's log-likelihoods)
    that shares the base's weights, no second copy (of the modules trained in full, the frozen
    copies :func:`apply_lora` kept). The policy's computing methods
    (:data:`BASE_VIEW_METHODS`) run under :func:`adapters_off`; every other attribute is the
    policy's own (its ``logit_scale`` included). The policy's mode applies: use it where the
    policy computes in ``eval()`` mode, as GSPO's and DPO's do."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._policy, name)
        if name not in BASE_VIEW_METHODS:
            return value

        @functools.wraps(value)
        def without_adapters(*args: Any, **kwargs: Any) -> Any:
            with adapters_off(self._policy):
                return value(*args, **kwargs)

        return without_adapters


BASE_VIEW_METHODS = frozenset({
    "condition", "sample", "step_log_probs", "decode", "sft_loss", "preference_noise",
    "preference_log_likelihood",
})  # fmt: skip


def _adapter_params(module: nn.Module) -> dict[str, nn.Parameter]:
    return {
        f"{name}.{p}": getattr(m, p)
        for name, m in module.named_modules()
        if isinstance(m, LoRALinear)
        for p in ("lora_a", "lora_b")
    }


def adapter_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a run with adapters trains, by qualified name: the ``A`` and ``B`` matrices and any
    other parameter that trains beside them (``modules_to_save``, a learned temperature's
    ``logit_scale``); empty without adapters."""
    own = _adapter_params(module)
    if not own:
        return {}
    others = {n: p for n, p in module.named_parameters() if p.requires_grad and n not in own}
    return {k: p.detach().clone() for k, p in {**own, **others}.items()}


def load_adapter_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put saved adapters back into ``module`` (wrapped by :func:`apply_lora` with the same
    config); a mismatch names the keys."""
    own: dict[str, torch.Tensor] = dict(_adapter_params(module))
    params = dict(module.named_parameters())
    own.update({k: params[k] for k in state.keys() - own.keys() if k in params})
    missing, extra = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    wrong = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            "the checkpoint's LoRA adapters do not fit this run's model.lora "
            f"(missing: {', '.join(missing[:4]) or 'none'}; unexpected: "
            f"{', '.join(extra[:4]) or 'none'}; other shapes: {', '.join(wrong[:4]) or 'none'})"
        )
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(state[k])


def check_merged(module: nn.Module, folder: str | Path) -> None:
    """Refuse adapters put back on another base: ``folder`` (a checkpoint's ``policy/``, saved
    merged) must hold ``module``'s merged weights, compared tensor by tensor as they are read
    (a resumed run's base changed since, or other adapter settings, differ far beyond the
    rounding of another device)."""
    from safetensors import safe_open

    lora = {name: m for name, m in module.named_modules() if isinstance(m, LoRALinear)}
    inside = tuple(f"{name}." for name in lora)
    expected: dict[str, Any] = {
        n: t for n, t in [*module.named_parameters(), *module.named_buffers()]
        if not n.startswith(inside)
    }  # fmt: skip
    for name, m in lora.items():
        expected[f"{name}.weight"] = m
        if m.bias is not None:
            expected[f"{name}.bias"] = m.bias
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                own = expected.get(key)
                if own is None:
                    continue
                with torch.no_grad():
                    own = own.weight if isinstance(own, LoRALinear) else own
                    saved = f.get_tensor(key).to(own.device, own.dtype)
                    if saved.shape != own.shape or not torch.allclose(
                        saved, own, rtol=1e-4, atol=1e-6
                    ):
                        raise ValueError(
                            f"{folder}: its {key} is not the base's with these adapters: the "
                            "base (model.init_from) or the adapter settings changed since the "
                            "checkpoint was written; resume with those it was trained with"
                        )


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    params: Sequence[torch.Tensor] = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
