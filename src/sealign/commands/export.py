"""Export a policy for shipping: copy its folder with the weights stored in a smaller float
type, and optionally set the recommended sampling settings (``sampling.json``).

--model is a run folder (its latest checkpoint), a checkpoint folder or a saved policy folder.
Weights stored as float16 or bfloat16 take half the disk space; they are cast back to the
model's float32 parameters when loaded, so inference and further training run as before. The
command reloads the exported folder and reports the largest change of any parameter.

examples:
  sealign export --model runs/mgm/checkpoints/step_00002000 --output shipped/mgm --dtype float16
  sealign export --model runs/ar --output shipped/ar --temperature 0.3 --top-k 50
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sealign.commands.common import log
from sealign.infer.dereverb import DEREVERBS
from sealign.infer.enhance import EnhanceConfig
from sealign.infer.fusion import FUSIONS
from sealign.models.persist import (
    SAMPLING_FILE,
    WEIGHTS_FILE,
    checkpoint_sampling,
    write_sampling,
)
from sealign.train.checkpoint import policy_dir

HELP = "copy a policy folder with half-precision weights and recommended sampling settings"
DTYPES = ("float32", "float16", "bfloat16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run, checkpoint or policy folder")
    p.add_argument("--output", required=True, help="new policy folder (must not exist)")
    p.add_argument("--dtype", choices=DTYPES, default="float16", help="stored weight type")
    p.add_argument("--temperature", type=float, help="recommended sampling temperature")
    p.add_argument("--top-k", type=int, help="recommended top-k (0 = off)")
    p.add_argument("--top-p", type=float, help="recommended top-p (1 = off)")
    p.add_argument("--fuse", choices=FUSIONS, help="recommended post-processing")
    p.add_argument("--dereverb", choices=DEREVERBS, help="recommended pre-processing")


def cast_weights(path: Path, dtype: str) -> int:
    """Rewrite a safetensors file with every floating tensor stored as ``dtype``; returns the
    number of tensors cast."""
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    state = load_file(str(path))
    cast = {k: v for k, v in state.items() if v.is_floating_point() and v.dtype != target}
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"{path.name}: {k} holds NaN or inf: the model is broken")
        if k in cast and not torch.isfinite(v.to(target)).all():
            raise ValueError(f"{path.name}: {k} has values beyond {dtype}'s range "
                             f"(largest |w| {v.abs().max().item():.3g}); try bfloat16")  # fmt: skip
    state.update({k: v.to(target).contiguous() for k, v in cast.items()})
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    shutil.copymode(path, tmp)
    tmp.replace(path)
    return len(cast)


def export_policy(
    model: str | Path, output: str | Path, dtype: str, sampling: dict | None = None
) -> float:
    """Copy the policy at ``model`` to ``output`` with weights stored as ``dtype`` and
    ``sampling`` merged into its ``sampling.json``; returns the largest absolute difference
    between the original and the reloaded parameters."""
    from sealign.models.registry import load_policy

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    src, dst = policy_dir(Path(model)), Path(output)
    if dst.exists():
        raise ValueError(f"output exists: {dst}")
    settings = {**checkpoint_sampling(src), **(sampling or {})}
    EnhanceConfig(**settings)  # the settings' own checks, before any work
    # the policy's weight files: a custom policy may name them as it likes (the codec's arrays
    # live in a subfolder and are left as they are)
    weights = sorted(p.name for p in src.glob("*.safetensors"))
    if not weights:
        hint = ("; a demo folder holds its aligned model in gspo/" if (src / "gspo").is_dir()
                else "")  # fmt: skip
        raise ValueError(f"{src}: no *.safetensors weights file to cast (expected "
                         f"{WEIGHTS_FILE}){hint}")  # fmt: skip
    original = load_policy(src)
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    try:
        for name in weights:
            cast_weights(tmp / name, dtype)
        (tmp / SAMPLING_FILE).unlink(missing_ok=True)
        write_sampling(tmp, settings)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(dst)
    exported = load_policy(dst).state_dict()  # type: ignore[attr-defined]
    diffs = [
        (v.float() - exported[k].float()).abs().max().item()
        for k, v in original.state_dict().items()  # type: ignore[attr-defined]
        if v.is_floating_point() and v.numel()
    ]
    return max(diffs, default=0.0)


def _size_mb(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 1e6


def run(args: argparse.Namespace) -> int:
    sampling = {
        k: v
        for k, v in (
            ("temperature", args.temperature),
            ("top_k", args.top_k),
            ("top_p", args.top_p),
            ("fuse", args.fuse),
            ("dereverb", args.dereverb),
        )
        if v is not None
    }
    src = policy_dir(Path(args.model))
    diff = export_policy(src, args.output, args.dtype, sampling)
    log.info(
        "exported %s -> %s (%s weights): %.2f MB -> %.2f MB, largest parameter change %.2e, "
        "sampling %s",
        src,
        args.output,
        args.dtype,
        _size_mb(src),
        _size_mb(Path(args.output)),
        diff,
        checkpoint_sampling(args.output) or "none",
    )
    return 0
