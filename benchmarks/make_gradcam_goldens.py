"""Golden CAM maps from pytorch-grad-cam, for the parity tests of mechscope's CAM family (tests/test_attribution.py).

pytorch-grad-cam imports torchvision, which needs another torch than the project's, so this script runs in its own
environment (``bash benchmarks/setup_gradcam.sh``) and writes a small safetensors file that the tests compare
against::

    .venv-gradcam/bin/python benchmarks/make_gradcam_goldens.py

The models are :func:`mechscope.organisms._vision.numpy_seeded` (a small CNN and a small ViT whose every
weight numpy draws from a seed), so the test rebuilds the very same bytes under any torch version; the file records
their sha256 and the test fails loudly if its rebuild differs. Inputs (procedural shapes, stored as float16 and used
as such on both sides) and the peer's maps (``grayscale_cam``: ReLU, min-max scaled per image, resized to 32 x 32)
are stored as float16. Nothing from pytorch-grad-cam is copied into the repository: only its outputs.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from mechscope.data.images import shapes
from mechscope.organisms._vision import numpy_seeded

METHODS = ("GradCAM", "GradCAMPlusPlus", "ScoreCAM", "LayerCAM", "EigenCAM")
MODELS = {"cnn": "relu4", "vit": "blocks.1.norm1"}
"""Architecture -> the module CAMs explain (the CNN's last ReLU; the ViT's last attention input)."""


def vit_tokens_to_grid(t: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam needs a reshape function for ViTs: drop the CLS token, lay the 8 x 8 grid out."""
    b, n, d = t.shape
    side = int((n - 1) ** 0.5)
    return t[:, 1:].reshape(b, side, side, d).permute(0, 3, 1, 2)


def main() -> None:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/goldens/gradcam.safetensors")
    parser.add_argument("--n", type=int, default=6, help="images per model")
    parser.add_argument("--seed", type=int, default=0, help="numpy seed of the weights")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = shapes(args.n, seed=11)
    x = data.images.half().float()  # the stored float16 inputs, exactly
    y = data.labels
    tensors: dict[str, torch.Tensor] = {"images": x.half().contiguous(), "labels": y.contiguous()}
    meta: dict[str, object] = {"torch": torch.__version__, "grad-cam": version("grad-cam"), "seed": args.seed,
                               "methods": list(METHODS)}  # fmt: skip
    for arch, layer_path in MODELS.items():
        module, sha = numpy_seeded(arch, args.seed)  # type: ignore[arg-type]
        module.requires_grad_(True)  # pytorch-grad-cam reaches the layer's gradient through the weights' graph
        layer = module.get_submodule(layer_path)
        reshape = vit_tokens_to_grid if arch == "vit" else None
        targets = [ClassifierOutputTarget(int(c)) for c in y]
        meta[arch] = {"weights_sha256": sha, "layer": layer_path}
        for method in METHODS:
            with getattr(pgc, method)(model=module, target_layers=[layer], reshape_transform=reshape) as cam:
                maps = cam(input_tensor=x.clone(), targets=targets)  # [n 32 32] numpy, min-max scaled per image
            tensors[f"{arch}/{method}"] = torch.from_numpy(np.ascontiguousarray(maps)).half()
            flat = maps.reshape(len(maps), -1)
            print(f"{arch} {method}: {maps.shape}, images with a non-constant map: {(np.ptp(flat, 1) > 0).sum()}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
