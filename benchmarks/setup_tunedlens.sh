#!/usr/bin/env bash
# Build .venv-tunedlens at the repository root: the tuned-lens package (Belrose et al. 2023) that
# benchmarks/tuned_lens.py compares mechscope's tuned-lens training against, kept out of the project's .venv.
# Idempotent; --force rebuilds.
#
# tuned-lens 0.2.0 declares accelerate, datasets, plotly, torchdata, wandb, simple-parsing and flatten-dict for its
# training script and plots; the lens itself (tuned_lens.nn: TunedLens, Unembed, model_surgery) needs only torch,
# transformers and huggingface_hub. It is therefore installed with --no-deps on top of a pinned torch (the CPU
# wheel, first, so no CUDA build is pulled) and the project's transformers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-tunedlens"
PY="${PYTHON:-python3.11}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.25.0}"   # the project venv's version, so HF code is the same
TUNED_LENS_VERSION="${TUNED_LENS_VERSION:-0.2.0}"

want_check() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$TUNED_LENS_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
torch_v, tl_v = sys.argv[1:]
assert version("torch").split("+")[0] == torch_v
assert version("tuned-lens") == tl_v
from tuned_lens.nn import TunedLens, Unembed  # noqa: F401
PYEOF
}

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
elif [[ -x "$VENV/bin/python" ]] && want_check; then
    echo "setup_tunedlens: $VENV is ready (torch $TORCH_VERSION, tuned-lens $TUNED_LENS_VERSION)"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
CONSTRAINTS="$VENV/constraints.txt"
printf 'torch==%s\ntransformers==%s\n' "$TORCH_VERSION" "$TRANSFORMERS_VERSION" >"$CONSTRAINTS"

if ! "${PIP[@]}" "torch==$TORCH_VERSION" -c "$CONSTRAINTS"; then
    "${PIP[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
fi
"${PIP[@]}" -c "$CONSTRAINTS" "transformers==$TRANSFORMERS_VERSION" huggingface_hub safetensors
"${PIP[@]}" --no-deps "tuned-lens==$TUNED_LENS_VERSION"

want_check || { echo "setup_tunedlens: the venv does not import tuned_lens.nn; see the output above" >&2; exit 1; }
"$VENV/bin/python" - <<'PYEOF'
from importlib.metadata import version
print("setup_tunedlens: ready:", ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "tuned-lens")))
PYEOF
