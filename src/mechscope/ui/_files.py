"""What the explorer may read: the RUN_DIRs (and feature databases) named on the command line, nothing else.

A file is addressed by a *reference* ``"ROOT/RELATIVE/PATH"``: the index of a root (as ``/api/runs`` lists them)
and a path inside it. ``Roots.resolve`` refuses absolute paths, ``..`` parts, and anything that leaves its root once
symlinks are followed, so no request can read a path outside the directories the user gave.

``Roots.scan`` finds what the app can open: circuit runs (``summary.json`` of ``mechscope circuit --out``), bench
leaderboards (a JSON with ``rows`` and ``scores``, e.g. ``docs/leaderboard.json``), feature databases (SQLite
files of ``mechscope features build``) and attribution graphs (``graph*.json`` of ``mechscope graph``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MAX_FILES = 5000
"""Files looked at per scan (a RUN_DIR that is someone's home folder must not stall the server)."""
MAX_DEPTH = 6
_JSON_LIMIT = 64 * 2**20
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class PathRefused(ValueError):
    """A reference that would read outside the directories given on the command line."""


@dataclass(frozen=True)
class Found:
    """A file the app can open."""

    ref: str
    """Its reference (``ROOT/PATH``), as the API takes it."""
    kind: str
    """``circuit``, ``leaderboard``, ``features`` or ``graph`` (a mechscope graph.json)."""
    title: str

    def to_dict(self) -> dict[str, str]:
        return {"ref": self.ref, "kind": self.kind, "title": self.title}


class Roots:
    """The directories (and single files) the user named; every file read goes through ``resolve``."""

    def __init__(self, paths: list[Path] | tuple[Path, ...]) -> None:
        self.paths = tuple(Path(p).resolve() for p in paths)
        for p in self.paths:
            if not p.exists():
                raise FileNotFoundError(f"no such run directory or file: {p}")

    def describe(self) -> list[dict[str, Any]]:
        return [{"index": i, "name": p.name, "is_file": p.is_file()} for i, p in enumerate(self.paths)]

    def ref(self, path: Path) -> str:
        """The reference of ``path``, which must lie under a root."""
        path = path.resolve()
        for i, root in enumerate(self.paths):
            if path == root:
                return str(i)
            if path.is_relative_to(root):
                return f"{i}/{path.relative_to(root).as_posix()}"
        raise PathRefused(f"{path} is under none of the run directories")

    def resolve(self, ref: str) -> Path:
        """The file a reference names; PathRefused when it would leave its root, FileNotFoundError when absent."""
        head, _, rest = ref.partition("/")
        if not head.isdigit() or int(head) >= len(self.paths):
            raise PathRefused(
                f"unknown root {head!r} in {ref!r}: references start with a root index "
                f"0..{len(self.paths) - 1} (see /api/runs)"
            )
        root = self.paths[int(head)]
        rel = PurePosixPath(rest)
        if rest.startswith("/") or "\\" in rest or any(part == ".." for part in rel.parts) or "\x00" in rest:
            raise PathRefused(f"refused {ref!r}: a reference is a path inside its root, without '..' or a leading '/'")
        path = (root / rel).resolve() if rest else root
        if path != root and not path.is_relative_to(root if root.is_dir() else root.parent):
            raise PathRefused(f"refused {ref!r}: it leads outside the run directory (through a link)")
        if root.is_file() and path != root:
            raise PathRefused(f"refused {ref!r}: root {head} is a single file")
        if not path.is_file():
            raise FileNotFoundError(f"no file {ref!r} in the run directories")
        return path

    def scan(self) -> list[Found]:
        """Every circuit run, leaderboard and feature database under the roots (bounded: ``MAX_FILES``)."""
        found: list[Found] = []
        seen = 0
        for i, root in enumerate(self.paths):
            for path in _walk(root):
                seen += 1
                if seen > MAX_FILES:
                    return found
                kind = classify(path)
                if kind is not None:
                    rel = path.relative_to(root).as_posix() if path != root else ""
                    ref = f"{i}/{rel}" if rel else str(i)
                    found.append(Found(ref, kind, f"{root.name}/{rel}" if rel else root.name))
        return found


def _walk(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        out += [Path(dirpath) / f for f in sorted(filenames)]
        if len(out) > MAX_FILES:
            break
    return out


def classify(path: Path) -> str | None:
    """``circuit``, ``leaderboard``, ``features``, ``graph`` or None for a file the app does not open."""
    if path.suffix in _DB_SUFFIXES:
        return "features" if _is_feature_db(path) else None
    if path.suffix != ".json" or path.stat().st_size > _JSON_LIMIT:
        return None
    if path.name == "summary.json":
        doc = read_json(path)
        return "circuit" if isinstance(doc, dict) and {"method", "circuit", "task"} <= doc.keys() else None
    if "graph" in path.name:
        doc = read_json(path)
        return "graph" if isinstance(doc, dict) and doc.get("format") == "mechscope.attribution_graph" else None
    if "leaderboard" in path.name:
        doc = read_json(path)
        return "leaderboard" if isinstance(doc, dict) and {"rows", "scores"} <= doc.keys() else None
    return None


def read_json(path: Path) -> Any:
    """The JSON document in ``path`` (None when it is not JSON)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _is_feature_db(path: Path) -> bool:
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return row is not None and json.loads(row[0]) == "mechscope.feature_db"
