"""Rewards for online RL: metric rewards on a common scale, their composite, group advantages."""

from sealign.rewards.advantages import (
    AGGREGATIONS,
    GroupAdvantages,
    component_zero_spread,
    group_advantages,
)
from sealign.rewards.composite import (
    CompositeReward,
    RewardComponent,
    RewardConfig,
    RewardFunction,
    to_reward_scale,
)

__all__ = [
    "AGGREGATIONS",
    "CompositeReward",
    "GroupAdvantages",
    "RewardComponent",
    "RewardConfig",
    "RewardFunction",
    "component_zero_spread",
    "group_advantages",
    "to_reward_scale",
]
