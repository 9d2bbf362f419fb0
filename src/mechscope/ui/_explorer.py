"""The explorer's state: the model (loaded once), the run directories, the worker and the access rules."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from ..core._model import Model
from . import _lab, _views
from ._files import Roots
from ._lab import BadRequest
from ._security import is_loopback
from ._worker import Worker, checkpoint_modules


@dataclass
class Explorer:
    """What the server holds: the model (loaded once), the run directories, the worker, and the access rules."""

    model: Model | None = None
    roots: Roots = field(default_factory=lambda: Roots([]))
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    """Required on every request when set; ``mechscope serve`` generates one for a non-loopback host."""
    max_tokens: int = _lab.DEFAULT_MAX_TOKENS
    dictionary: Any = None
    """A sparse dictionary (``features.load_dictionary``) for the feature pages' *try it* and *steer*."""
    worker: Worker = field(default_factory=Worker)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Circuit runs started from the app (``run:N``), kept in memory for this server's life."""
    transcoders: Any = None
    """Per-layer transcoders (``{layer: Dictionary}``) or a cross-layer one (``graphs.load_transcoders``) for the
    attribution-graph view."""
    tuned_lens: Any = None
    """A tuned lens for the model (``lenses.load_tuned_lens``): the prompt lab's lens grid shows its predictions
    beside the logit lens's, on the same layer x position axes."""
    graphs: dict[str, Any] = field(default_factory=dict)
    """Attribution graphs held for this server's life: computed ones (``graph:N``) and opened files (by reference,
    with the supernodes added to them since)."""

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"--host {self.host} reaches beyond this machine: an access token is required")
        if self.tuned_lens is not None and self.model is not None:
            self.tuned_lens.check(self.model)  # MismatchError naming both shapes (or weights) when it is another's

    def circuit(self, ref: str) -> dict[str, Any]:
        """A circuit run's summary: one started from the app (``run:N``) or a file under the roots."""
        if ref.startswith("run:"):
            if ref not in self.runs:
                raise FileNotFoundError(f"no circuit run {ref!r} on this server (see /api/runs)")
            return self.runs[ref]
        return _views.circuit_doc(self.roots.resolve(ref))

    def graph(self, ref: str) -> Any:
        """A held attribution graph (``graph:N``), or a graph.json under the roots (read once, then held)."""
        if ref in self.graphs:
            return self.graphs[ref]
        if ref.startswith("graph:"):
            raise FileNotFoundError(f"no graph {ref!r} on this server (see /api/graphs)")
        from ..graphs import AttributionGraph

        path = self.roots.resolve(ref)
        try:
            graph = AttributionGraph.from_json(path.read_text())
        except (UnicodeDecodeError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise BadRequest(f"{ref} is not a readable mechscope graph.json: {err}") from None
        self.graphs[ref] = graph
        return graph

    @functools.cached_property
    def replacement(self) -> Any:
        """The model with the server's transcoders (``graphs.ReplacementModel``), built on first use."""
        if self.transcoders is None:
            raise BadRequest(
                "this server has no transcoders: start it with --transcoders DIR (a folder of "
                "layer_0/, layer_1/, ... or a cross-layer transcoder) to compute or verify graphs"
            )
        from ..graphs import ReplacementModel

        return ReplacementModel(self.need_model(), self.transcoders)

    def need_model(self) -> Model:
        if self.model is None:
            raise BadRequest("this server has no model loaded (start it with --model NAME)")
        return self.model

    @functools.cached_property
    def checkpoints(self) -> tuple[Any, ...]:
        """Where a running model job can be cancelled (``_worker.checkpoint_modules`` of the model)."""
        return checkpoint_modules(self.need_model().module)

    async def on_model(self, name: str, fn: Any, *args: Any) -> Any:
        model = self.need_model()
        return await self.worker.run(name, fn, model, *args, modules=self.checkpoints)
