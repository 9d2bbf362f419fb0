"""Golden dictionary files written by SAELens and EleutherAI's sparsify themselves, for tests/test_interop.py.

SAELens pins TransformerLens < 4, so this runs in its own environment (``bash benchmarks/setup_saelens.sh``, which
also installs sparsify)::

    .venv-saelens/bin/python benchmarks/make_saelens_goldens.py

Reading: for each architecture mechscope reads (SAELens standard, topk, jumprelu, gated; a sparsify TopK coder) it
builds a small coder with the library's own classes (d_in 8, d_sae 16, weights from a seeded generator), saves it
with the library's own writer, and stores the library's encode/decode of fixed inputs beside it; the test loads each
folder with ``mechscope.features.load_dictionary`` and compares. Writing: it rebuilds mechscope dictionaries from
seeds (``exported_dictionary`` below, which the test repeats), exports them with ``export_saelens`` /
``export_sparsify``, loads those files with the real library and stores its outputs; the test checks that
mechscope's own outputs equal them. Nothing from either library is copied: only files and outputs they produced.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import torch
from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAE, SAEMetadata
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
from safetensors.torch import save_file
from sparsify import SparseCoder, SparseCoderConfig

from mechscope.features import DictionaryConfig, build_dictionary, export_saelens, export_sparsify

OUT = Path(__file__).resolve().parents[1] / "tests" / "goldens" / "saelens"
D_IN, D_SAE = 8, 16


def build(arch: str):
    meta = SAEMetadata(hook_name="blocks.1.hook_resid_post")
    common = {"d_in": D_IN, "d_sae": D_SAE, "metadata": meta}
    sae = {
        "standard": lambda: StandardSAE(StandardSAEConfig(**common)),
        "topk": lambda: TopKSAE(TopKSAEConfig(k=4, **common)),
        "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(**common)),
        "gated": lambda: GatedSAE(GatedSAEConfig(**common)),
    }[arch]()
    gen = torch.Generator().manual_seed(len(arch))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        if arch == "jumprelu":
            sae.threshold.abs_()  # SAELens thresholds are non-negative
    return sae.eval()


def exported_dictionary(kind: str):
    """A mechscope dictionary whose every weight comes from a seed (tests/test_interop.py builds the same one)."""
    d = build_dictionary(DictionaryConfig(kind, d_in=D_IN, d_sae=D_SAE, k=4, site="resid_post.1"))
    gen = torch.Generator().manual_seed(100 + len(kind))
    with torch.no_grad():
        for _, p in sorted(d.named_parameters()):
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return d.eval()


def dense(acts: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return torch.zeros(acts.shape[0], D_SAE).scatter(-1, indices, acts)


def main() -> None:
    x = torch.randn(32, D_IN, generator=torch.Generator().manual_seed(0)) * 2
    index = {"sae_lens": version("sae-lens"), "torch": version("torch"), "architectures": []}
    for arch in ("standard", "topk", "jumprelu", "gated"):
        sae = build(arch)
        folder = OUT / arch
        sae.save_model(folder)
        with torch.no_grad():
            acts = sae.encode(x)
            recon = sae.decode(acts)
        fired = float((acts > 0).float().mean())
        assert 0.05 < fired < 0.95, f"{arch}: {fired:.2f} of latents fire; pick other weights"
        save_file(
            {"x": x, "acts": acts.contiguous(), "recon": recon.contiguous()}, str(folder / "expected.safetensors")
        )
        index["architectures"].append({"architecture": arch, "fired": round(fired, 3)})
        print(f"{arch}: {fired:.2f} of latents fire")

    # sparsify writes a TopK coder; its encoder returns (top_acts, top_indices).
    coder = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=4), device="cpu")
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, p in coder.named_parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        coder.save_to_disk(OUT / "sparsify")
        enc = coder.encode(x)
        acts = dense(enc.top_acts, enc.top_indices)
        save_file({"x": x, "acts": acts, "recon": coder.decode(enc.top_acts, enc.top_indices)},
                  str(OUT / "sparsify" / "expected.safetensors"))  # fmt: skip
    index["sparsify"] = version("eai-sparsify")

    # A sparsify coder with a skip connection: its forward adds x @ W_skip.T to the decoded latents.
    coder = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=4, skip_connection=True), device="cpu")
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in coder.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        coder.save_to_disk(OUT / "sparsify_skip")
        enc = coder.encode(x)
        save_file({"x": x, "acts": dense(enc.top_acts, enc.top_indices), "recon": coder(x).sae_out.contiguous()},
                  str(OUT / "sparsify_skip" / "expected.safetensors"))  # fmt: skip

    # mechscope's exports, read by the real libraries.
    outputs = {}
    for kind in ("relu", "topk", "jumprelu"):
        folder = export_saelens(exported_dictionary(kind), OUT / "_export" / kind)
        sae = SAE.load_from_disk(folder)
        with torch.no_grad():
            outputs[f"saelens.{kind}.acts"] = sae.encode(x).contiguous()
            outputs[f"saelens.{kind}.recon"] = sae.decode(sae.encode(x)).contiguous()
    folder = export_sparsify(exported_dictionary("topk"), OUT / "_export" / "sparsify")
    loaded = SparseCoder.load_from_disk(folder)
    with torch.no_grad():
        enc = loaded.encode(x)
        outputs["sparsify.topk.acts"] = dense(enc.top_acts, enc.top_indices)
        outputs["sparsify.topk.recon"] = loaded.decode(enc.top_acts, enc.top_indices)
    save_file(outputs, str(OUT / "exported.safetensors"))
    import shutil

    shutil.rmtree(OUT / "_export")  # the test re-exports; only the libraries' outputs are kept
    (OUT / "index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
