"""Shared fixtures: seeded speech generated offline with eSpeak NG, and noise mixtures."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from sealign.data.espeak import synthesize_espeak

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A large red ball rolled slowly across the wooden floor of the kitchen.",
    "We will meet near the old bridge after the morning rain has stopped.",
]


@pytest.fixture(scope="session")
def speech():
    """``speech(i, voice)`` → 16 kHz float32 waveform of sentence ``i`` spoken by ``voice``."""
    cache: dict[tuple[int, str], np.ndarray] = {}

    def make(i: int = 0, voice: str = "en-us+m3") -> np.ndarray:
        key = (i, voice)
        if key not in cache:
            wav, _ = synthesize_espeak(SENTENCES[i % len(SENTENCES)], voice=voice)
            cache[key] = wav
        return cache[key].copy()

    return make


def add_noise(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """Mix white-ish noise into ``clean`` at ``snr_db``."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(clean.size).astype(np.float32)
    p_s = np.mean(clean**2)
    p_n = np.mean(noise**2)
    noisy = clean + noise * np.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
    return (noisy / max(1.0, np.abs(noisy).max())).astype(np.float32)


def check_logit_scale(policy, cond, temperature: float, top_k: int) -> None:
    """A token policy's ``logit_scale`` is a learned inverse temperature: sampling at 2T with
    s = log 2 samples what T without it does (same seed: same tokens and log-probs); the
    recomputed log-probs equal the sampled ones, and carry a gradient to s. Leaves s = log 2."""
    import torch

    assert float(policy.logit_scale) == 0.0 and not policy.logit_scale.requires_grad
    plain = policy.sample(cond, temperature, torch.Generator().manual_seed(3), top_k=top_k)
    with torch.no_grad():
        policy.logit_scale.fill_(float(np.log(2.0)))
    scaled = policy.sample(cond, 2 * temperature, torch.Generator().manual_seed(3), top_k=top_k)
    assert torch.equal(scaled.actions["tokens"], plain.actions["tokens"])
    torch.testing.assert_close(scaled.logp, plain.logp, atol=1e-4, rtol=0)
    policy.logit_scale.requires_grad_(True)  # as GSPO trains it
    logp, _ = policy.step_log_probs(cond, scaled)
    torch.testing.assert_close(logp, scaled.logp, atol=1e-4, rtol=0)
    logp.sum().backward()
    assert policy.logit_scale.grad is not None and policy.logit_scale.grad != 0
    policy.logit_scale.requires_grad_(False)


def fit_batch(policy, cond, targets, steps: int, optimizer=None, lr: float = 3e-3) -> list:
    """``steps`` SFT updates of ``policy`` on one batch (Adam unless ``optimizer`` is given, a
    class); the losses before each update."""
    import torch

    opt = (optimizer or torch.optim.Adam)(policy.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = policy.sft_loss(cond, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="session")
def noisy():
    return add_noise


TINY_CODEC = {"ar_spec_k": 16, "ar_f0_k": 4, "mgm_spec_k": [8, 8], "mgm_f0_k": 8, "kmeans_iters": 6}
TINY_AR = {"dim": 32, "layers": 1, "heads": 2, "features": {"n_mels": 20}}


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory, speech):
    """A tiny WORLD codec (``codec/``), a randomly initialized tiny AR policy (``base/``) and
    noisy/clean pairs of six 1-s eSpeak clips with manifests ``train.jsonl`` (4),
    ``valid.jsonl`` (2) and ``test.jsonl`` (3)."""
    import soundfile as sf
    import torch

    from sealign.codecs.world import WorldCodecConfig, train_world_codec
    from sealign.data.manifest import write_manifest
    from sealign.models.registry import build_policy

    root = tmp_path_factory.mktemp("tiny")
    clean = [speech(i, v)[:16000] for v in ("en-us+m3", "en-us+f2") for i in range(3)]
    codec = train_world_codec(clean, root / "codec", WorldCodecConfig(**TINY_CODEC))
    torch.manual_seed(0)
    build_policy("ar", codec, dict(TINY_AR)).save(root / "base")
    rows = []
    for k, c in enumerate(clean):
        sf.write(root / f"c{k}.wav", c, 16000)
        sf.write(root / f"n{k}.wav", add_noise(c, 5.0, seed=k), 16000)
        rows.append({"id": f"u{k}", "audio": f"n{k}.wav", "reference": f"c{k}.wav", "text": "x"})
    write_manifest(root / "train.jsonl", rows[:4])
    write_manifest(root / "valid.jsonl", rows[4:])
    write_manifest(root / "test.jsonl", rows[3:])
    return root


@pytest.fixture
def on_meta():
    """``on_meta(metric, call)`` runs ``call(metric)`` with the metric's device set to ``meta``
    (tensors without data, on which every op runs): it must get as far as copying a result back
    to the CPU. A model or input left on the CPU fails earlier, with a device mismatch."""

    def run(metric, call):
        metric.device = "meta"
        with pytest.raises((RuntimeError, NotImplementedError)) as err:
            call(metric)
        msg = str(err.value)
        assert "meta tensor" in msg, msg
        assert "device" not in msg, msg

    return run


@pytest.fixture(scope="session")
def torchrun():
    """``torchrun(port, *args, nodes=1)`` runs ``sealign <args>`` in two processes under
    ``torch.distributed.run`` (gloo, one thread each) and returns the completed process:
    two processes on one node, or with ``nodes=2`` one process on each of two "machines" on
    localhost (then RANK 1 has LOCAL_RANK 0; the returned process is node 0's, its return code
    non-zero if either node failed)."""

    def run(port: int, *args: str, nodes: int = 1) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
        base = [sys.executable, "-m", "torch.distributed.run", "--master-port", str(port)]
        if nodes == 1:
            cmd = [*base, "--nproc-per-node", "2", "-m", "sealign", *args]
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        procs = [
            subprocess.Popen(
                [
                    *base,
                    "--nnodes",
                    str(nodes),
                    "--node-rank",
                    str(k),
                    "--nproc-per-node",
                    "1",
                    "--master-addr",
                    "127.0.0.1",
                    "-m",
                    "sealign",
                    *args,
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for k in range(nodes)
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        rc = max(abs(p.returncode) for p in procs)
        return subprocess.CompletedProcess(
            procs[0].args, rc, outs[0][0], "".join(e for _, e in outs)
        )

    return run


def random_phase(x: np.ndarray) -> np.ndarray:
    """``x`` with its STFT phases replaced by random ones: the spectra a vocoder keeps, not the
    waveform."""
    from scipy.signal import istft, stft

    _, _, spec = stft(x, nperseg=512)
    phase = np.exp(2j * np.pi * np.random.default_rng(0).random(spec.shape))
    return istft(np.abs(spec) * phase, nperseg=512)[1][: x.size]
