"""TransformerLens / SAELens hook names resolve to mechscope sites; dictionaries keep their site across layouts."""

import torch

import mechscope as ms
from mechscope.core import HOOK_NAMES, hook_of_site, site_of_hook
from mechscope.features import DictionaryConfig, build_dictionary, export_saelens, load_dictionary


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
