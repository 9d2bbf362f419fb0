"""Why Neural Cleanse's masks missed trojan_rgb's patch: where the trojan answers, and what each class's mask is.

For the colour recipe without displaced-trigger negatives (``displaced=0``, the organism before issue 18's fix) and
the default recipe, seeds 0-1 of ``trojan_rgb``:

- ``SEED/RECIPE/asr_at_ROW_COL``: share of held-out non-target images the planted patch sends to the target when
  pasted at (row, column) instead of its place (24, 24) (the first row is its own place);
- ``SEED/RECIPE/class_C/mask_l1`` and ``.../inside``: the Neural Cleanse trigger of every class (``trojans.audit``
  defaults, 300 steps, one start, 128 images): its mask's L1 norm (pixels) and the share of it inside the patch.

Rows carry ``target`` (the trojan's class). One torch thread. Run: ``.venv/bin/python
benchmarks/trojan_colour_diagnosis.py``; writes ``benchmarks/results/trojan_colour_diagnosis.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from mechscope import organisms, trojans
from mechscope._machine import machine
from mechscope.organisms._trojan import target_rate
from mechscope.organisms._trojan_rgb import AT

ROOT = Path(__file__).resolve().parent.parent
PLACES = ((24, 24), (0, 0), (13, 13), (2, 24), (24, 2), (10, 20))
RECIPES = {"no_displaced": organisms.ColourTrojanConfig(displaced=0.0), "default": organisms.ColourTrojanConfig()}


def main() -> None:
    torch.set_num_threads(1)
    rows: list[dict] = []
    for seed in (0, 1):
        for recipe, cfg in RECIPES.items():
            org = organisms.obtain(organisms.TrojanRGB(cfg=cfg), seed)
            planted = org.planted[0]
            x = org.test.images[org.test.labels != planted.target][:256]
            for place in PLACES:
                moved, _ = dataclasses.replace(planted.trigger, position=place).apply(x, seed=1)
                rows.append({"name": f"{seed}/{recipe}/asr_at_{place[0]}_{place[1]}", "metric": "attack_success",
                             "value": target_rate(org.model, moved, planted.target), "unit": "share",
                             "target": org.target})  # fmt: skip
            result = trojans.audit(org.model, org.clean(128), steps=300, progress=False)
            for t in result.triggers:
                inside = float(t.mask[AT[0] : AT[0] + 6, AT[1] : AT[1] + 6].sum() / t.mask.sum())
                base = {"unit": "pixels", "target": org.target}
                rows.append({"name": f"{seed}/{recipe}/class_{t.target}/mask_l1", "metric": "mask_l1",
                             "value": t.size} | base)  # fmt: skip
                rows.append({"name": f"{seed}/{recipe}/class_{t.target}/inside", "metric": "inside",
                             "value": inside} | base | {"unit": "share"})  # fmt: skip
            print(seed, recipe, [round(t.size, 1) for t in result.triggers], flush=True)
    body = {"benchmark": "trojan_colour_diagnosis", "machine": machine(), "rows": rows, "ratios": {}}
    (ROOT / "benchmarks/results/trojan_colour_diagnosis.json").write_text(json.dumps(body, indent=1) + "\n")


if __name__ == "__main__":
    main()
