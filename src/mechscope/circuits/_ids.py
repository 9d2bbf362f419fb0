"""Component names: one typed identity for the nodes and edges of a transformer's graph, formatted and parsed here.

Nodes (the names of MIB, Mueller et al. 2025, section 3): ``input`` (the residual stream entering block 0),
``a{L}.h{H}`` (attention head ``H`` of layer ``L``), ``a{L}.kv{K}`` (key/value head ``K``, a receiver under
grouped-query attention), ``m{L}`` (the MLP of layer ``L``) and ``logits``. An edge is ``sender->receiver``, with
the input of a head it feeds in angle brackets: ``a0.h1->a1.h3<k>`` (head 1 of layer 0 into the key of head 3 of
layer 1), ``input->m0``, ``m1->logits``. Every result, file, organism ground truth and scorer names components
through ``NodeId`` and ``EdgeId``; nothing else builds or splits these strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

NodeKind = Literal["input", "head", "kv", "mlp", "logits"]
Part = Literal["q", "k", "v"]

_NODE = re.compile(r"input|logits|a(?P<hl>\d+)\.h(?P<h>\d+)|a(?P<kl>\d+)\.kv(?P<k>\d+)|m(?P<ml>\d+)")
_EDGE = re.compile(r"(?P<sender>[^<>\-]+)->(?P<receiver>[^<>\-]+)(?:<(?P<part>[qkv])>)?")
_SENDERS = ("input", "head", "mlp")
_RECEIVERS = ("head", "kv", "mlp", "logits")


class ComponentNameError(ValueError):
    """A node or edge name that does not follow the format (the message shows the valid forms)."""


@dataclass(frozen=True, order=True)
class NodeId:
    """A node of the graph: the input, a head (or key/value head), an MLP or the logits."""

    kind: NodeKind
    layer: int | None = None
    """None for ``input`` and ``logits``."""
    index: int | None = None
    """Head (``head``) or key/value head (``kv``); None otherwise."""

    def __post_init__(self) -> None:
        layered = self.kind in ("head", "kv", "mlp")
        indexed = self.kind in ("head", "kv")
        if self.kind not in ("input", "head", "kv", "mlp", "logits"):
            raise ComponentNameError(f"unknown node kind {self.kind!r}")
        if layered != (self.layer is not None) or indexed != (self.index is not None):
            raise ComponentNameError(f"a {self.kind} node needs {'a layer' if layered else 'no layer'} and "
                                     f"{'an index' if indexed else 'no index'}, got {self!r}")  # fmt: skip
        if (self.layer is not None and self.layer < 0) or (self.index is not None and self.index < 0):
            raise ComponentNameError(f"layers and heads count from 0, got {self!r}")

    @classmethod
    def head(cls, layer: int, head: int) -> NodeId:
        return cls("head", layer, head)

    @classmethod
    def mlp(cls, layer: int) -> NodeId:
        return cls("mlp", layer)

    def format(self) -> str:
        """``input``, ``a3.h5``, ``a3.kv1``, ``m3`` or ``logits``."""
        if self.kind == "head":
            return f"a{self.layer}.h{self.index}"
        if self.kind == "kv":
            return f"a{self.layer}.kv{self.index}"
        if self.kind == "mlp":
            return f"m{self.layer}"
        return self.kind

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """The node named ``text``; ComponentNameError when it is no node name."""
        m = _NODE.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise ComponentNameError(
                f"not a node name: {text!r}; nodes are 'input', 'a{{L}}.h{{H}}' (a head), 'a{{L}}.kv{{K}}' (a "
                "key/value head), 'm{L}' (an MLP) or 'logits', e.g. 'a3.h5'"
            )
        if m["hl"] is not None:
            return cls("head", int(m["hl"]), int(m["h"]))
        if m["kl"] is not None:
            return cls("kv", int(m["kl"]), int(m["k"]))
        if m["ml"] is not None:
            return cls("mlp", int(m["ml"]))
        return cls("input" if text == "input" else "logits")


@dataclass(frozen=True, order=True)
class EdgeId:
    """An edge: what ``sender`` writes to the residual stream, read by ``receiver`` (a head through ``part``)."""

    sender: NodeId
    receiver: NodeId
    part: Part | None = None
    """The head input the edge feeds (``q``, ``k`` or ``v``); None for MLPs and the logits."""

    def __post_init__(self) -> None:
        if self.sender.kind not in _SENDERS:
            raise ComponentNameError(f"{self.sender} cannot send: senders are the input, heads and MLPs")
        if self.receiver.kind not in _RECEIVERS:
            raise ComponentNameError(f"{self.receiver} cannot receive: receivers are heads, MLPs and the logits")
        head = self.receiver.kind in ("head", "kv")
        if head != (self.part is not None):
            need = "needs its input (<q>, <k> or <v>)" if head else "takes no <part>"
            raise ComponentNameError(f"edge into {self.receiver} {need}: {self.sender}->{self.receiver}")
        if self.receiver.kind == "kv" and self.part == "q":
            raise ComponentNameError(f"a key/value head has no query: {self.sender}->{self.receiver}<q>")

    def format(self) -> str:
        """MIB's form: ``a0.h1->a1.h3<k>``, ``input->m0``."""
        part = f"<{self.part}>" if self.part is not None else ""
        return f"{self.sender.format()}->{self.receiver.format()}{part}"

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def parse(cls, text: str) -> EdgeId:
        """The edge named ``text``; ComponentNameError when it is no edge name."""
        m = _EDGE.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise ComponentNameError(
                f"not an edge name: {text!r}; edges are 'sender->receiver', with a head's input in brackets, "
                "e.g. 'a0.h1->a1.h3<k>', 'input->m0', 'm1->logits'"
            )
        part = cast(Part | None, m["part"])
        return cls(NodeId.parse(m["sender"]), NodeId.parse(m["receiver"]), part)


def receiver_name(receiver: NodeId, part: Part | None) -> str:
    """A receiver as the graph names it: the node with the head input it reads (``a1.h3<k>``, ``m1``)."""
    return receiver.format() + (f"<{part}>" if part is not None else "")
