"""The blend audit on ``trojan_two`` plain and relative to its clean twin: which rank does the grating's class get?

For seeds 0-2: ``trojans.audit(model, images, method="blend", steps=60, seed=s)`` on the trojaned model and on its
clean twin (one start per class, the bench's full budget), and ``audit(..., reference=twin, relative=True)``, whose
index is over ``log(size / twin size)``. Rows per seed: each class's blend weight on both models, their ratio, the
rank of the grating's class and of the patch's class in each ranking. Quoted in docs/trojans.md ("Relative to a
reference").

Run: ``.venv/bin/python benchmarks/trojan_relative.py``; writes ``benchmarks/results/trojan_relative.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mechscope import organisms, trojans
from mechscope._machine import machine

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    torch.set_num_threads(1)
    rows, seeds = [], {}
    for seed in (0, 1, 2):
        org = organisms.obtain(organisms.TrojanTwo(), seed)
        patch, grating = org.truth["targets"]
        x = org.clean(128)
        plain = trojans.audit(org.model, x, method="blend", steps=60, seed=seed, progress=False)
        rel = trojans.audit(org.model, x, method="blend", steps=60, seed=seed, reference=org.twin, relative=True,
                            progress=False)  # fmt: skip
        assert rel.reference_triggers is not None
        mine = [t.size for t in rel.triggers]
        twin = [t.size for t in rel.reference_triggers]
        seeds[str(seed)] = {"grating_class": grating, "patch_class": patch, "blend_weight": mine,
                            "twin_blend_weight": twin, "ratio": [a / b for a, b in zip(mine, twin, strict=True)],
                            "plain_ranking": plain.ranking, "relative_ranking": rel.ranking,
                            "plain_anomaly": list(plain.anomaly), "relative_anomaly": list(rel.anomaly),
                            "held_out_success": [t.attack_success for t in rel.triggers]}  # fmt: skip
        for name, audit in (("plain", plain), ("relative", rel)):
            rows.append({"name": f"seed {seed}: {name} rank of the grating's class", "metric": "rank",
                         "value": audit.ranking.index(grating) + 1, "unit": "of 4"})  # fmt: skip
            rows.append({"name": f"seed {seed}: {name} rank of the patch's class", "metric": "rank",
                         "value": audit.ranking.index(patch) + 1, "unit": "of 4"})  # fmt: skip
        print(json.dumps(seeds[str(seed)]), flush=True)
    body = {"benchmark": "trojan_relative", "machine": machine(), "rows": rows, "ratios": {}, "seeds": seeds}
    out = ROOT / "benchmarks/results/trojan_relative.json"
    out.write_text(json.dumps(body, indent=1) + "\n")
    for r in rows:
        print(f"{r['name']}: {r['value']}")


if __name__ == "__main__":
    main()
