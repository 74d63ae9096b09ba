"""Thread-count control: the machine may be shared, so every backend takes an explicit count."""

from __future__ import annotations

import os


def set_torch_threads(n: int) -> None:
    """Limit torch intra-op threads (inter-op can only be set once per process)."""
    import torch

    torch.set_num_threads(max(1, int(n)))


def ort_session_options(n: int):
    """onnxruntime session options with ``n`` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(n))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def default_threads() -> int:
    return int(os.environ.get("SEALIGN_THREADS", min(2, os.cpu_count() or 1)))
