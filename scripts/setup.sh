#!/usr/bin/env bash
# Idempotent set-up of .venv: torch==2.13.0 (CPU build) first, then sealign with what the
# offline default needs. Re-running is a no-op until pyproject.toml or this script changes.
# A torch range left to the resolver could pull a multi-GB CUDA build, so torch is pinned here
# and installed before anything that depends on it. Set TORCH_INDEX_URL (e.g. PyTorch's CPU
# index) on machines where the default index would serve a CUDA build of torch 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.sealign-setup
LOG=$VENV/setup.log
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import sealign" 2>/dev/null; then
  exit 0
fi

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "sealign needs Python >= 3.10")'
echo "sealign setup: installing into $VENV (first run takes a few minutes; log: $LOG)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
: > "$LOG"
pip_install() {
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >> "$LOG" 2>&1; then
    echo "sealign setup: 'pip install $*' failed; last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
}
torch_args=(torch==2.13.0)
[ -n "${TORCH_INDEX_URL:-}" ] && torch_args+=(--index-url "$TORCH_INDEX_URL")
pip_install "${torch_args[@]}"
# These declare dependencies that would break the environment (torchaudio pins another torch;
# `typing` is an obsolete backport); what they really import is listed in pyproject.toml.
pip_install --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0 resemblyzer==0.1.4
# The constraint keeps the resolver from replacing the torch installed above (e.g. if a dependency
# such as accelerate or trl ever asked for another version): the install fails instead.
echo "${torch_args[0]}" > "$VENV/torch-constraint.txt"
pip_install -c "$VENV/torch-constraint.txt" -e ".[dev]"
"$VENV/bin/python" - <<'PY'
import torch
assert torch.__version__.split("+")[0] == "2.13.0", f"unexpected torch {torch.__version__}"
PY
# Kokoro's English voice tables ship in the npm package kokoro-js; without npm only Kokoro is
# unavailable (the data commands then say how to provide the voices).
if command -v npm >/dev/null 2>&1; then
  "$VENV/bin/python" -c "from sealign.data.tts import ensure_kokoro_voices; ensure_kokoro_voices()" \
    >> "$LOG" 2>&1 || echo "sealign setup: Kokoro voices not installed (see $LOG); other TTS engines work"
else
  echo "sealign setup: npm not found, Kokoro voices not installed; other TTS engines work"
fi
echo "$want" > "$STAMP"
echo "sealign setup: done"
