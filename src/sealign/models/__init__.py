"""Generative SE model families behind one :class:`~sealign.models.policy.Policy` protocol."""
