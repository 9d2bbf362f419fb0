"""The built-in suite: every organism, method and scorer the bench ships, assembled when asked for.

Nothing here runs at import: ``default_suite()`` imports the organisms and the method adapters, declares them in a
fresh ``Suite`` and adds the plug-ins (``PLUGINS``). ``run_bench`` and ``mechscope bench`` call it; a caller that
wants another selection builds or edits its own suite.
"""

from __future__ import annotations

from typing import Any

from ._registry import PLUGINS, Suite


def default_suite() -> Suite:
    """A fresh suite of the built-in organisms, methods and scorers, plus ``PLUGINS``."""
    suite = Suite()
    _scorers(suite)
    _organisms(suite)
    _circuit_methods(suite)
    _other_methods(suite)
    _vision_methods(suite)
    _compiled_methods(suite)
    return suite.include(PLUGINS).check()


def score(family: str, output: Any, organism: Any, method: str, *, suite: Suite | None = None) -> list[Any]:
    """Every applicable score of ``output`` for an organism of ``family`` (by ``suite``, default the built-in one)."""
    return (suite or default_suite()).score(family, output, organism, method)


def _scorers(suite: Suite) -> None:
    from . import _faithfulness, _tracr, _vision_scorers
    from ._scorers import SCORERS

    for family, scorers in SCORERS.items():
        for scorer in scorers:
            suite.add_scorer(family, scorer)
    suite.add_scorer("circuits", _faithfulness.faithfulness_areas)
    for scorer in (_tracr._node_auroc, _tracr._edge_auroc):
        suite.add_scorer("compiled", scorer)
    for scorer in (_vision_scorers.trigger_pick, _vision_scorers.trigger_overlap, _vision_scorers.trojan_detection):
        suite.add_scorer("trojans", scorer)
    suite.add_scorer("attribution", _vision_scorers.attribution_scores)


def _organisms(suite: Suite) -> None:
    from .. import organisms as o
    from ._tracr import MISSING_TRACR, TRACR_ORGANISMS, tracr_available

    for organism in (
        o.Induction(), o.ModularAddition(), o.ToyModelOfSuperposition(), o.SyntheticFeatures(), o.NumericFunctions(),
        o.TrojanPatch(), o.TrojanBlend(), o.TrojanNatural(), o.SignalBlocks(),
    ):  # fmt: skip
        suite.add_organism(organism)
    for compiled in TRACR_ORGANISMS:  # compiled RASP programs: built only with the tracr extra installed
        if tracr_available():
            suite.add_organism(compiled)
        else:
            suite.unavailable[compiled.name] = MISSING_TRACR


def _circuit_methods(suite: Suite) -> None:
    from . import _faithfulness as fa
    from . import _methods as m

    for fn in (m.attribution_patching_heads, m.activation_patching_heads, m.direct_logit_attribution_heads,
               m.edge_attribution_patching, m.edge_attribution_patching_ig, fa.acdc_nodes):  # fmt: skip
        suite.add_method(fn, family="circuits", applies_to=("induction",))
    suite.add_method(m.random_circuit, family="circuits", name="random", baseline=True)
    suite.add_method(m.oracle_circuit, family="circuits", name="oracle", baseline=True)


def _other_methods(suite: Suite) -> None:
    from . import _methods as m

    suite.add_method(m.topk_sae, family="features")
    suite.add_method(m.random_dictionary_method, family="features", name="random_dictionary", baseline=True)
    suite.add_method(m.oracle_dictionary, family="features", name="oracle", baseline=True)
    suite.add_method(m.logit_fourier, family="frequencies")
    suite.add_method(m.random_frequencies, family="frequencies", name="random", baseline=True)
    suite.add_method(m.oracle_frequencies, family="frequencies", name="oracle", baseline=True)
    suite.add_method(m.jump_detector, family="descriptions")
    suite.add_method(m.random_descriptions, family="descriptions", name="random", baseline=True)
    suite.add_method(m.oracle_descriptions, family="descriptions", name="oracle", baseline=True)


def _vision_methods(suite: Suite) -> None:
    from . import _vision_methods as v

    for name, (heat, description) in v.ATTRIBUTIONS.items():
        suite.add_method(v._trojan_attribution(name, heat, description), family="trojans", name=name)
        suite.add_method(v._block_attribution(name, heat, description), family="attribution", name=name)
    suite.add_method(v.insertion_probe, family="trojans")
    suite.add_method(v.feature_visualisation, family="trojans")
    suite.add_method(v.random_trojan, family="trojans", name="random", baseline=True)
    suite.add_method(v.edge_detector_trojan, family="trojans", name="edge_detector", baseline=True)
    suite.add_method(v.oracle_trojan, family="trojans", name="oracle", baseline=True)
    suite.add_method(v.random_attribution, family="attribution", name="random", baseline=True)
    suite.add_method(v.edge_detector_attribution, family="attribution", name="edge_detector", baseline=True)
    suite.add_method(v.oracle_attribution, family="attribution", name="oracle", baseline=True)


def _compiled_methods(suite: Suite) -> None:
    from . import _tracr as t

    for fn in (t.zero_ablation, t.mean_ablation, t.attribution_patching, t.edge_attribution_patching,
               t.edge_attribution_patching_ig):  # fmt: skip
        suite.add_method(fn, family="compiled")
    suite.add_method(t.random_components, family="compiled", name="random", baseline=True)
    suite.add_method(t.oracle_components, family="compiled", name="oracle", baseline=True)
