"""Thread limits: a command's `threads` bounds torch and numpy's BLAS alike."""

from __future__ import annotations

import os

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from sealign.utils.threads import set_torch_threads, thread_budget


def test_set_torch_threads_limits_blas_too(monkeypatch):
    np.linalg.solve(np.eye(3), np.ones(3))  # numpy's BLAS is loaded
    before = torch.get_num_threads()
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "7")  # restored after the test
    with threadpool_limits(limits=None):  # restores the BLAS pools on exit
        try:
            set_torch_threads(1)
            blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
            assert blas and all(i["num_threads"] == 1 for i in blas)
            assert torch.get_num_threads() == 1 and thread_budget() == 1
            assert os.environ["OPENBLAS_NUM_THREADS"] == "1"  # for BLAS libraries loaded later
        finally:
            set_torch_threads(before)
