"""Speech data: synthesis, degradation and manifests."""
