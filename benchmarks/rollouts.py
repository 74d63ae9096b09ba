"""Rollout batches as the demo's GSPO samples them, for the benchmarks that score them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def demo_rollouts(
    model: str | None, data: str, batches: int
) -> Iterator[tuple[list[np.ndarray], np.ndarray, list, int]]:
    """Yield ``(waveforms, group index per output, examples, sample rate)`` for ``batches``
    batches: the policy at ``model`` (default: the shipped AR checkpoint) on ``data``'s train
    split with the demo's sampling (8 inputs × 4 outputs, T = 1, top-k 50), seeded."""
    from sealign.commands.demo import _demo_gspo, shipped_checkpoint
    from sealign.models.registry import load_policy
    from sealign.rl.gspo import rl_options
    from sealign.train.checkpoint import policy_dir
    from sealign.train.data import PairDataset
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(2)
    cfg = _demo_gspo()
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
