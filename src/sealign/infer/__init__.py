"""Inference: enhance files with a trained policy (batched, long files chunked and stitched)."""
