"""Multi-metric preference data: candidates sampled from a policy, scored, paired by criterion."""
