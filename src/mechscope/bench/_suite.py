"""The built-in suite: every organism, method and scorer the bench ships, assembled when asked for.

Nothing here runs at import: ``default_suite()`` imports the organisms and the method adapters, declares them in a
fresh ``Suite`` and adds the plug-ins (``PLUGINS``). ``run_bench`` and ``mechscope bench`` call it; a caller that
wants another selection builds or edits its own suite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._registry import PLUGINS, Suite

if TYPE_CHECKING:
    from ..organisms._protocols import BuiltOrganism
    from ._scorers import Score


def default_suite() -> Suite:
    """A fresh suite of the built-in organisms, methods and scorers, plus ``PLUGINS``."""
    suite = Suite()
    _scorers(suite)
    _organisms(suite)
    _circuit_methods(suite)
    _dictionary_methods(suite)
    _other_methods(suite)
    _vision_methods(suite)
    _compiled_methods(suite)
    _graph_methods(suite)
    _autointerp_methods(suite)
    _representation_methods(suite)
    return suite.include(PLUGINS).check()


def score(family: str, output: Any, organism: BuiltOrganism, method: str, *,
          suite: Suite | None = None) -> list[Score]:  # fmt: skip
    """Every applicable score of ``output`` for an organism of ``family`` (by ``suite``, default the built-in one)."""
    return (suite or default_suite()).score(family, output, organism, method)


def _scorers(suite: Suite) -> None:
    from . import _concepts, _faithfulness, _graphs, _tracr, _vision_scorers
    from ._scorers import SCORERS

    for family, scorers in SCORERS.items():
        for scorer in scorers:
            suite.add_scorer(family, scorer)
    suite.add_scorer("circuits", _faithfulness.faithfulness_areas)
    for scorer in (_tracr._node_auroc, _tracr._edge_auroc, _tracr._faithfulness_areas, _tracr._selector_scores):
        suite.add_scorer("compiled", scorer)
    for scorer in (_vision_scorers.trigger_pick, _vision_scorers.trigger_overlap, _vision_scorers.trojan_detection,
                   _vision_scorers.target_identification, _vision_scorers.twin_false_alarm,
                   _vision_scorers.trigger_reconstruction):  # fmt: skip
        suite.add_scorer("trojans", scorer)
    suite.add_scorer("attribution", _vision_scorers.attribution_scores)
    suite.add_scorer("representations", _concepts.concept_scores)
    suite.add_scorer("graphs", _graphs.graph_edge_auroc)
    suite.add_scorer("graphs", _graphs.graph_scores)
    from . import _autointerp

    for scorer in _autointerp.SCORERS:
        suite.add_scorer("autointerp", scorer)


def _organisms(suite: Suite) -> None:
    from .. import organisms as o

    for organism in (
        o.Induction(), o.ModularAddition(), o.ToyModelOfSuperposition(), o.SyntheticFeatures(), o.NumericFunctions(),
        o.TrojanPatch(), o.TrojanBlend(), o.TrojanNatural(), o.TrojanRGB(), o.TrojanTwo(), o.SignalBlocks(),
        o.PlantedGraph(), o.PlantedConcept(),
    ):  # fmt: skip
        suite.add_organism(organism)
    for known in (o.PlantedText(), o.FindText()):  # known-meaning latents: scored with all-MiniLM-L6-v2
        if o.embedder_available():
            suite.add_organism(known)
        else:
            suite.unavailable[known.name] = o.MISSING_EMBEDDER
    for compiled in o.TRACR_ORGANISMS:  # compiled RASP programs: built only with the tracr extra installed
        if o.tracr_available():
            suite.add_organism(compiled)
        else:
            suite.unavailable[compiled.name] = o.MISSING_TRACR


def _circuit_methods(suite: Suite) -> None:
    from . import _circuits
    from . import _methods as m

    for spec in _circuits.circuit_methods():  # every declared circuit and node method, through the one adapter
        suite.add(spec)
    suite.add_method(m.random_circuit, family="circuits", name="random", baseline=True)
    suite.add_method(m.oracle_circuit, family="circuits", name="oracle", baseline=True)
    suite.add_method(m.composition, family="circuits")  # weight readings (mechscope.lenses), no circuit search
    suite.add_method(m.head_types, family="circuits", name="head-types")


def _dictionary_methods(suite: Suite) -> None:
    from . import _features
    from . import _methods as m

    for spec in _features.dictionary_methods():  # every declared dictionary kind, through the one adapter
        suite.add(spec)
    suite.add_method(m.random_dictionary_method, family="features", name="random_dictionary", baseline=True)
    suite.add_method(m.oracle_dictionary, family="features", name="oracle", baseline=True)


def _other_methods(suite: Suite) -> None:
    from . import _methods as m

    suite.add_method(m.logit_fourier, family="frequencies")
    suite.add_method(m.unembed_fourier, family="frequencies")
    suite.add_method(m.random_frequencies, family="frequencies", name="random", baseline=True)
    suite.add_method(m.oracle_frequencies, family="frequencies", name="oracle", baseline=True)
    suite.add_method(m.jump_detector, family="descriptions")
    suite.add_method(m.random_descriptions, family="descriptions", name="random", baseline=True)
    suite.add_method(m.oracle_descriptions, family="descriptions", name="oracle", baseline=True)


def _vision_methods(suite: Suite) -> None:
    from . import _vision_methods as v

    for spec in v.attribution_methods():  # every declared attribution method tagged for the bench, one adapter
        suite.add(spec)
    # an upper reference, not a method under test: it scores the candidates on the same kind of images and placements
    # that the organism's own build-time verification accepted, so its pick is right by construction
    suite.add_method(v.insertion_probe, family="trojans", baseline=True)
    suite.add_method(v.feature_visualisation, family="trojans")
    for spec in v.audit_methods():  # every declared trojan method (trojans.METHODS) through trojans.audit
        suite.add(spec)
    suite.add_method(v.random_trojan, family="trojans", name="random", baseline=True)
    suite.add_method(v.oracle_trojan, family="trojans", name="oracle", baseline=True)
    suite.add_method(v.random_attribution, family="attribution", name="random", baseline=True)
    suite.add_method(v.oracle_attribution, family="attribution", name="oracle", baseline=True)


def _compiled_methods(suite: Suite) -> None:
    from . import _tracr as t

    for fn in (t.zero_ablation, t.mean_ablation):
        suite.add_method(fn, family="compiled")
    # the circuits family's names for the same library methods (``circuits.METHODS``), so the leaderboard reads alike
    suite.add_method(t.edge_attribution_patching, family="compiled", name="eap")
    suite.add_method(t.edge_attribution_patching_ig, family="compiled", name="eap-ig")
    suite.add_method(t.acdc_components, family="compiled", name="acdc")
    suite.add_method(t.qk_selectors, family="compiled", name="qk-selectors")  # weights only (lenses.head_weights)
    suite.add_method(t.random_components, family="compiled", name="random", baseline=True)
    suite.add_method(t.oracle_components, family="compiled", name="oracle", baseline=True)


def _graph_methods(suite: Suite) -> None:
    from . import _graphs as g

    for spec in g.graph_methods():  # every declared dictionary kind as a transcoder, through the one adapter
        suite.add(spec)
    suite.add_method(g.random_graphs, family="graphs", name="random", baseline=True)
    suite.add_method(g.oracle_graphs, family="graphs", name="oracle", baseline=True)


def _autointerp_methods(suite: Suite) -> None:
    from . import _autointerp as a

    for spec in [*a.explainer_methods(), *a.scorer_methods()]:  # declared explainers and scorers, one adapter
        suite.add(spec)
    suite.add_method(a.random_method, family="autointerp", name="random", baseline=True)
    suite.add_method(a.oracle_method, family="autointerp", name="oracle", baseline=True)


def _representation_methods(suite: Suite) -> None:
    from . import _concepts as c

    suite.add_method(c.probe, family="representations")  # the lenses family's declared probe
    suite.add_method(c.caa, family="representations")
    suite.add_method(c.shuffled_labels, family="representations", name="shuffled-labels", baseline=True)
    suite.add_method(c.random_direction, family="representations", name="random", baseline=True)
    suite.add_method(c.oracle, family="representations", name="oracle", baseline=True)
