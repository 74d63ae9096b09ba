"""Training loops (SFT; GSPO and DPO to come), their data pipeline and checkpoints."""
