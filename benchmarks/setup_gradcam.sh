#!/usr/bin/env bash
# Build .venv-gradcam at the repository root for pytorch-grad-cam (the CAM peer of benchmarks/attribution.py and
# of the goldens benchmarks/make_gradcam_goldens.py writes). pytorch-grad-cam imports torchvision, which needs a
# torch other than the project's, hence a venv of its own. Idempotent; --force rebuilds.
#
# torch and torchvision are installed first (pinned together) and held for every later step. On these machines the
# only torchvision that installs beside a torch this package supports is 0.29.1 with torch 2.14.1, and PyPI's torch
# 2.14.1 wheel is the CUDA build (about 5.5 GB, from local disk here): the peer runs on the CPU all the same, but it
# is not the project's CPU torch 2.13.0, so the Grad-CAM ratio compares two torch builds (see benchmarks/README.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-gradcam"
PY="${PYTHON:-python3.11}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"
GRADCAM_VERSION="${GRADCAM_VERSION:-1.5.7}"

want_check() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$GRADCAM_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
torch_v, gc_v = sys.argv[1:]
assert version("torch").split("+")[0] == torch_v
assert version("grad-cam") == gc_v
import mechscope.attribution, pytorch_grad_cam  # noqa: F401,E401
PYEOF
}

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
elif [[ -x "$VENV/bin/python" ]] && want_check; then
    echo "setup_gradcam: $VENV is ready (torch $TORCH_VERSION, grad-cam $GRADCAM_VERSION)"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

CONSTRAINTS="$VENV/gradcam-constraints.txt"
cat >"$CONSTRAINTS" <<CEOF
torch==$TORCH_VERSION
torchvision==$TORCHVISION_VERSION
CEOF

# 1. torch + torchvision first (the local wheels here; elsewhere the PyTorch CPU index if PyPI's fails).
if ! "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" -c "$CONSTRAINTS"; then
    "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" --index-url https://download.pytorch.org/whl/cpu
fi

# 2. the peer (headless OpenCV: it needs no display), then mechscope itself, torch held where it is.
"${PIP[@]}" -c "$CONSTRAINTS" opencv-python-headless "grad-cam==$GRADCAM_VERSION"
"${PIP[@]}" -c "$CONSTRAINTS" -e "$ROOT"

want_check || { echo "setup_gradcam: the venv does not import mechscope and pytorch_grad_cam; see above" >&2; exit 1; }
"$VENV/bin/python" - <<'PYEOF'
from importlib.metadata import version
print("setup_gradcam: ready:", ", ".join(f"{p} {version(p)}" for p in ("torch", "torchvision", "grad-cam", "mechscope")))
PYEOF
