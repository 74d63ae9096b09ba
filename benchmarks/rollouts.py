"""Rollout batches as the demo's GSPO samples them, for the benchmarks that score them."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def at_least(low: int):
    """An argparse ``type``: an integer of at least ``low`` (a count of 0 would only crash
    after the models load)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def held_temperature_demo():
    """The demo's GSPO settings with its sampling temperature held (8 inputs × 4 samples a
    step at T = 1, ``temperature_lr`` 0): the demo's default until session 51, at which the
    benchmarks that sample rollouts themselves measured what docs/ reports."""
    import dataclasses

    from sealign.commands.demo import _demo_gspo

    cfg = _demo_gspo()
    return dataclasses.replace(
        cfg, temperature_lr=0.0, data=dataclasses.replace(cfg.data, batch_size=8)
    )


def temperature_setup(model: str | None, data: str, seed: int, threads: int, cfg):
    """For the benchmarks on the learned temperature: the policy at ``model`` (default: the
    shipped AR checkpoint; frozen but for its ``logit_scale`` s), s's value, the train split of
    ``data`` in ``cfg``'s batches, the demo's reward (loaded) and a seeded generator."""
    import torch

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.registry import load_policy
    from sealign.rewards import CompositeReward
    from sealign.rl.gspo import learned_temperature
    from sealign.train.checkpoint import policy_dir
    from sealign.train.data import PairDataset
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(threads)
    path = Path(model) if model else shipped_checkpoint()
    policy = load_policy(policy_dir(path))
    policy.eval().requires_grad_(False)
    scale = learned_temperature(policy, 1.0)  # only s carries gradients
    assert scale is not None
    ds = PairDataset([str(Path(data) / "train.jsonl")], cfg.data, policy.sample_rate, seed)
    reward = CompositeReward(cfg.reward, num_threads=threads)
    reward.load()
    return (
        path,
        policy,
        scale,
        float(scale.detach()),
        ds,
        reward,
        torch.Generator().manual_seed(seed),
    )


def rollout_parser(doc: str, batches: int = 4) -> argparse.ArgumentParser:
    """A benchmark's argument parser with the options of :func:`demo_rollouts` (``--model``,
    ``--data``, ``--batches``); the description is ``doc``'s first paragraph."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--model", help="policy dir (default: the shipped AR checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument("--batches", type=at_least(1), default=batches)
    return p


def demo_rollouts(
    model: str | None, data: str, batches: int
) -> Iterator[tuple[list[np.ndarray], np.ndarray, list, int]]:
    """Yield ``(waveforms, group index per output, examples, sample rate)`` for ``batches``
    batches: the policy at ``model`` (default: the shipped AR checkpoint) on ``data``'s train
    split with the demo's sampling (8 inputs × 4 outputs, T = 1, top-k 50), seeded."""
    import torch

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.registry import load_policy
    from sealign.rl.gspo import rl_options
    from sealign.train.checkpoint import policy_dir
    from sealign.train.data import PairDataset
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(2)
    cfg = held_temperature_demo()
    path = Path(model) if model else shipped_checkpoint()
    policy = load_policy(policy_dir(path)).eval()  # type: ignore[attr-defined]
    ds = PairDataset([str(Path(data) / "train.jsonl")], cfg.data, policy.sample_rate, 0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(batches):
        examples = ds.next_batch()
        group = np.repeat(np.arange(len(examples)), cfg.sampling.group_size)
        with torch.no_grad():
            cond = policy.condition([e.noisy for e in examples]).select(torch.as_tensor(group))
            rollout = policy.sample(
                cond, temperature=cfg.sampling.temperature, generator=gen, **rl_options(policy, cfg)
            )
        yield policy.decode(rollout), group, examples, policy.sample_rate


def group_agreement(exact: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """How alike two scorings of the same rollouts drive GSPO, both ``[groups, G]``: the
    correlation of their group-normalized advantages (a group without spread has advantage 0),
    and the share of output pairs within a group that both order the same way (ties included)."""

    def advantages(x: np.ndarray) -> np.ndarray:
        std = x.std(1, keepdims=True)
        return np.where(std > 1e-9, (x - x.mean(1, keepdims=True)) / (std + 1e-8), 0.0)

    g = exact.shape[1]
    same = [
        np.sign(exact[:, i] - exact[:, j]) == np.sign(other[:, i] - other[:, j])
        for i, j in itertools.combinations(range(g), 2)
    ]
    corr = np.corrcoef(advantages(exact).ravel(), advantages(other).ravel())[0, 1]
    return float(corr), float(np.mean(same))
