"""TransformerLens / SAELens hook names resolve to mechscope sites; dictionaries keep their site across layouts."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mechscope as ms
from mechscope.core import HOOK_NAMES, hook_of_site, site_of_hook
from mechscope.features import (
    DictionaryConfig,
    build_dictionary,
    export_saelens,
    export_sparsify,
    load_dictionary,
)


def test_every_hook_name_is_a_site_of_a_real_model():
    m = ms.tiny("llama")
    sites = {s.name for s in m.sites()}
    for hook, site in HOOK_NAMES.items():
        for layer in (0, 1):
            name = hook.format(L=layer)
            assert site_of_hook(name) in sites, name
            assert m.resolve(name)[0].name == site.format(L=layer)
    assert site_of_hook("blocks.1.hook_nothing") is None and site_of_hook("resid_post.1") is None


def test_hook_names_cache_the_same_values_as_sites():
    m = ms.tiny("llama")
    tokens = torch.randint(0, 200, (2, 7), generator=torch.Generator().manual_seed(0))
    by_hook = m.run(tokens, cache=["blocks.1.hook_resid_post", "blocks.0.attn.hook_z"]).cache
    by_site = m.run(tokens, cache=["resid_post.1", "head.0.z"]).cache
    assert set(by_hook) == {"resid_post.1", "head.0.z"}
    assert all(torch.equal(by_hook[k], by_site[k]) for k in by_site)


def test_site_and_hook_round_trip():
    for hook in HOOK_NAMES:
        site = site_of_hook(hook.format(L=3))
        assert site is not None and site_of_hook(hook_of_site(site)) == site


def test_saelens_export_writes_hook_names_and_loads_back_as_sites(tmp_path):
    import json

    d = build_dictionary(DictionaryConfig("topk", d_in=8, d_sae=16, k=2, site="resid_post.4"))
    path = export_saelens(d, tmp_path)
    assert json.loads((path / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.4.hook_resid_post"
    assert load_dictionary(path).cfg.site == "resid_post.4"


# --- files written by the real libraries (benchmarks/make_saelens_goldens.py, run in .venv-saelens) ---------------

GOLDENS = Path(__file__).parent / "goldens" / "saelens"


@pytest.mark.parametrize("folder", ["standard", "topk", "jumprelu", "gated", "sparsify", "sparsify_skip"])
def test_reads_files_written_by_saelens_and_sparsify(folder):
    d = load_dictionary(GOLDENS / folder)
    expected = load_file(GOLDENS / folder / "expected.safetensors")
    with torch.no_grad():
        acts = d.encode(expected["x"])
        assert torch.allclose(acts, expected["acts"], atol=1e-5), folder
        assert torch.allclose(d.reconstruct(expected["x"]), expected["recon"], atol=1e-5), folder
    assert folder.startswith("sparsify") or d.cfg.site == "resid_post.1"  # SAELens's hook name, as a site
    assert d.cfg.skip_connection == (folder == "sparsify_skip")


def test_skip_connection_round_trips_trains_and_splices(tmp_path):
    from mechscope.features import TrainConfig, save_dictionary, train

    d = load_dictionary(GOLDENS / "sparsify_skip")
    x = load_file(GOLDENS / "sparsify_skip" / "expected.safetensors")["x"]
    for again in (
        load_dictionary(export_sparsify(d, tmp_path / "s")),
        load_dictionary(save_dictionary(d, tmp_path / "m")),
    ):
        assert torch.equal(again.W_skip, d.W_skip) and torch.allclose(again.reconstruct(x), d.reconstruct(x))
    with pytest.raises(ValueError, match="no skip connection"):
        export_saelens(d, tmp_path / "no")
    config = TrainConfig(DictionaryConfig("topk", d_in=8, d_sae=16, k=4, skip_connection=True), batch_size=64,
                         n_tokens=64 * 20)  # fmt: skip
    result = train(config, torch.randn(64 * 20, 8, generator=torch.Generator().manual_seed(0)), tmp_path / "run",
                   progress=False)  # fmt: skip
    assert result.dictionary.W_skip.abs().sum() > 0  # the skip weights learn (they start at zero)


def exported_dictionary(kind: str):
    """The seeded dictionary the golden script exported (the same code as there)."""
    d = build_dictionary(DictionaryConfig(kind, d_in=8, d_sae=16, k=4, site="resid_post.1"))
    gen = torch.Generator().manual_seed(100 + len(kind))
    with torch.no_grad():
        for _, p in sorted(d.named_parameters()):
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return d.eval()


@pytest.mark.parametrize(("library", "kind"), [("saelens", "relu"), ("saelens", "topk"), ("saelens", "jumprelu"),
                                               ("sparsify", "topk")])  # fmt: skip
def test_exports_compute_the_same_in_the_real_libraries(library, kind, tmp_path):
    outputs = load_file(GOLDENS / "exported.safetensors")
    x = load_file(GOLDENS / "standard" / "expected.safetensors")["x"]
    d = exported_dictionary(kind)
    export = export_saelens if library == "saelens" else export_sparsify
    again = load_dictionary(export(d, tmp_path))  # and mechscope reads its own export back
    with torch.no_grad():
        for model in (d, again):
            acts = model.encode(x)
            assert torch.allclose(acts, outputs[f"{library}.{kind}.acts"], atol=1e-5)
            assert torch.allclose(model.decode(acts), outputs[f"{library}.{kind}.recon"], atol=1e-5)
