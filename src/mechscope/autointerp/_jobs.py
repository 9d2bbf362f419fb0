"""Resumable jobs over a whole dictionary: explain every latent, score every explanation.

A job reads a latent's contexts from the feature database (``gather``), runs the declared explainer or scorer,
and writes that latent's row (``Records``), committing every ``Checkpoint.latents`` latents or once
``Checkpoint.seconds`` have passed since the last commit, whichever comes first (one commit per latent cost a
fast scorer ~14 ms a latent, more than its work); a latent already committed for the same run is skipped, so a
killed job restarted with the same arguments recomputes at most the latents after its last commit. A latent that
fails (a chat model that times out after its retries, an unparseable reply, a latent with nothing to explain)
gets a row with the error and is retried by the next run; the others go on. With a chat model that allows it
(``HTTPChat``'s ``concurrency``) up to that many latents are in flight at once; rows are written by the calling
thread only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from mechscope.core import MethodSpec
from mechscope.store import FeatureDB

from ._contexts import ContextConfig, LatentContexts, NegativePool, gather
from ._explainers import EXPLAINERS, PROMPT_VERSION, Explanation
from ._llm import Chat
from ._records import ExplanationRecord, Records, ScoreRecord, run_id
from ._scorers import BATCHED, EMBEDS, POOLED, SCORERS, Score, Tools

T = TypeVar("T")


@dataclass(frozen=True)
class JobSummary:
    """What a job did."""

    run: str
    """The run id its rows carry."""
    done: int
    """Latents written now."""
    skipped: int
    """Latents already written by an earlier run of the same job."""
    failed: dict[int, str] = field(default_factory=dict)
    """Latent -> error, for the latents that failed now."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time by phase: ``gather`` (contexts from the database), ``work`` (explaining or scoring), ``commit``
    (writing checkpoints to the database), ``total``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Checkpoint:
    """How often a job commits its rows: what a kill can lose is at most one checkpoint's latents."""

    latents: int = 256
    """Commit after this many latents' rows at most."""
    seconds: float = 1.0
    """Commit once this long has passed since the last commit (slow latents, e.g. a chat model: every latent)."""

    def __post_init__(self) -> None:
        if self.latents < 1 or self.seconds < 0:
            raise ValueError(f"a checkpoint needs latents >= 1 and seconds >= 0, got {self}")


def _spec(registry: Any, method: str | MethodSpec[Any, Any], llm: Chat | None) -> MethodSpec[Any, Any]:
    spec = method if isinstance(method, MethodSpec) else registry[method]
    if "llm" in spec.tags and llm is None:
        raise ValueError(f"{spec.name} needs a chat model: pass llm=LocalChat() (built-in) or HTTPChat(url)")
    return spec


def _latents(db: FeatureDB, latents: Iterable[int] | None) -> list[int]:
    if latents is not None:
        chosen = sorted(set(latents))
        if bad := [i for i in chosen if not 0 <= i < len(db)]:
            raise ValueError(f"latents {bad[:5]} are out of range: the dictionary has {len(db)} latents")
        return chosen
    return sorted(s.latent for s in db.top_latents("n_active", len(db)) if s.n_active > 0)


def explain(
    db_path: str | Path,
    explainer: str | MethodSpec[Any, Any] = "top-tokens",
    *,
    config: Any = None,
    latents: Iterable[int] | None = None,
    llm: Chat | None = None,
    contexts: ContextConfig = ContextConfig(),  # noqa: B008 (frozen)
    progress: bool = True,
    checkpoint: Checkpoint = Checkpoint(),
) -> JobSummary:
    """Explain ``latents`` (default: every latent that ever fired) of a feature database; rows go into it.

    Rows are committed per ``checkpoint``: a killed job, run again, redoes at most the latents after its last commit.
    """
    spec = _spec(EXPLAINERS, explainer, llm)
    config = config if config is not None else spec.config()
    provenance = {"explainer": spec.name, "config": dataclasses.asdict(config), "prompt_version": PROMPT_VERSION,
                  "llm": None if llm is None else llm.name, "contexts": dataclasses.asdict(contexts)}  # fmt: skip
    run = run_id(provenance)
    with FeatureDB(db_path) as db, Records(db_path) as records:
        todo = _latents(db, latents)
        finished = set(records.texts(spec.name, run))
        pending = [i for i in todo if i not in finished]

        def write(latent: int, result: Explanation | BaseException, seconds: float) -> None:
            e, error = (result, None) if isinstance(result, Explanation) else (Explanation(""), _error(result))
            records.put_explanation(ExplanationRecord(
                latent, spec.name, run, None if error else e.text, error, e.note, e.prompt, e.response,
                e.prompt_tokens, seconds, provenance), commit=False)  # fmt: skip

        def work(c: LatentContexts) -> Explanation:
            return spec.fn(c, llm, config)  # type: ignore[no-any-return]

        clock = _run(pending, lambda i: gather(db, i, contexts), work, write, _concurrency(llm), progress,
                     f"explain {spec.name}", records.commit, checkpoint)  # fmt: skip
    return JobSummary(run, len(pending) - len(clock.failed), len(todo) - len(pending), clock.failed, clock.seconds)


def score(
    db_path: str | Path,
    scorer: str | MethodSpec[Any, Any],
    *,
    explainer: str,
    run: str | None = None,
    config: Any = None,
    latents: Iterable[int] | None = None,
    llm: Chat | None = None,
    embedder: Any = None,
    steer: Any = None,
    pool: NegativePool | None = None,
    contexts: ContextConfig = ContextConfig(),  # noqa: B008 (frozen)
    seed: int = 0,
    progress: bool = True,
    batch_latents: int = 256,
    context_tokens: Any = None,
    checkpoint: Checkpoint = Checkpoint(),
) -> JobSummary:
    """Score the stored explanations of ``explainer`` (its ``run``; default its fullest) with ``scorer``.

    Beside each latent's score it stores the score of a shuffled explanation: another latent's, drawn by a
    seeded derangement over the explained latents. ``steer`` (a ``Steerer``) is for the ``output`` scorer.
    The embedding-based scorers (``embedding``, ``simulation``) read ``batch_latents`` latents' contexts at a time
    and embed all their texts (and both explanations) in one batched call first (256 latents: MiniLM ran the
    explanations of a pooled job ~2x faster than in chunks of 64 here; ``benchmarks/autointerp.py``).
    ``context_tokens`` (``store_context_tokens(store, db_path)``, or a ``ContextStates`` to share one between
    jobs) is what ``EmbeddingConfig(pooled_contexts=True)`` pools windows from; each store context is then run
    through MiniLM once per job (once per ``ContextStates``). The ``embedding`` scorer scores each chunk of
    ``batch_latents`` latents at once (``BATCHED``: one matrix product and one AUROC over the chunk). Rows are
    committed per ``checkpoint``.
    """
    spec = _spec(SCORERS, scorer, llm)
    config = config if config is not None else spec.config()
    tools = Tools(llm, embedder, steer, context_tokens)
    with FeatureDB(db_path) as db, Records(db_path) as records:
        run = run or records.latest_run(explainer)
        if run is None:
            raise ValueError(f"{db_path} holds no explanations by {explainer!r}: run `mechscope explain` first")
        texts = records.texts(explainer, run)
        shuffled = derange(texts, seed)
        provenance = {"scorer": spec.name, "config": dataclasses.asdict(config), "llm": None if llm is None else
                      llm.name, "contexts": dataclasses.asdict(contexts), "pool": None if pool is None else len(pool),
                      "seed": seed}  # fmt: skip
        todo = [i for i in _latents(db, latents) if i in texts]
        finished = records.scored(explainer, run, spec.name)
        pending = [i for i in todo if i not in finished]

        builtin = spec.name in SCORERS and SCORERS[spec.name].fn is spec.fn
        embeds = EMBEDS.get(spec.name) if builtin else None
        pooled = POOLED.get(spec.name) if builtin else None
        batched = BATCHED.get(spec.name) if builtin else None
        ready: dict[int, tuple[Score, Score]] = {}  # scored by ``batched`` for the chunk being worked on

        def work(c: LatentContexts) -> tuple[Score, Score]:
            if (done := ready.pop(c.latent, None)) is not None:
                return done
            mine = spec.fn(c, texts[c.latent], tools, config)
            return mine, spec.fn(c, shuffled[c.latent], tools, config)

        def write(latent: int, result: tuple[Score, Score] | BaseException, seconds: float) -> None:
            if isinstance(result, BaseException):
                row = ScoreRecord(latent, explainer, run, spec.name, None, None, None, None, _error(result), {},
                                  provenance)  # fmt: skip
            else:
                mine, other = result
                detail = {**mine.detail, "seconds": seconds, "shuffled_text": shuffled[latent]}
                row = ScoreRecord(latent, explainer, run, spec.name, mine.value, mine.chance, other.value, mine.n, None,
                                  detail, provenance)  # fmt: skip
            records.put_score(row, commit=False)

        def prefetch(cs: list[LatentContexts]) -> None:
            assert embeds is not None
            ready.clear()
            if pooled is not None and (needed := [i for c in cs for i in pooled(c, config)]):
                tools.contexts.prepare(needed)
            tools.embedder([t for c in cs for t in (texts[c.latent], shuffled[c.latent], *embeds(c, config))])
            if batched is not None:
                ready.update(batched(cs, texts, shuffled, tools, config))

        clock = _run(pending, lambda i: gather(db, i, contexts, pool), work, write, _concurrency(llm), progress,
                     f"score {spec.name}", records.commit, checkpoint, prefetch if embeds else None,
                     batch_latents if embeds else 1)  # fmt: skip
    return JobSummary(run, len(pending) - len(clock.failed), len(todo) - len(pending), clock.failed, clock.seconds)


def derange(texts: dict[int, str], seed: int) -> dict[int, str]:
    """Each latent's text replaced by another latent's (a random cyclic shift of a seeded permutation)."""
    keys = sorted(texts)
    order = keys[:]
    random.Random(seed).shuffle(order)
    return {k: texts[order[(j + 1) % len(order)]] for j, k in enumerate(order)} if len(keys) > 1 else dict(texts)


def _concurrency(llm: Chat | None) -> int:
    return 1 if llm is None else max(1, int(llm.concurrency))


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


@dataclass
class _Clock:
    seconds: dict[str, float]
    failed: dict[int, str]


def _run(
    latents: list[int],
    read: Callable[[int], LatentContexts],
    work: Callable[[LatentContexts], T],
    write: Callable[[int, T | BaseException, float], None],
    concurrency: int,
    progress: bool,
    desc: str,
    commit: Callable[[], None],
    checkpoint: Checkpoint,
    prepare: Callable[[list[LatentContexts]], None] | None = None,
    chunk: int = 1,
) -> _Clock:
    """Read (calling thread), work (``concurrency`` threads, at most that many in flight), write (calling thread).

    With ``prepare``, ``chunk`` latents are read at a time and ``prepare`` runs on their contexts (timed as work)
    before each is worked on; rows are still written one latent at a time, and committed per ``checkpoint``
    (and at the end, also when the job stops on an exception).
    """
    clock = _Clock({"gather": 0.0, "work": 0.0, "total": 0.0, "commit": 0.0}, {})
    start = time.perf_counter()
    since = {"rows": 0, "time": start}

    def save() -> None:
        t = time.perf_counter()
        commit()
        clock.seconds["commit"] += time.perf_counter() - t
        since["rows"], since["time"] = 0, time.perf_counter()

    def timed(c: LatentContexts) -> tuple[T | BaseException, float]:
        t = time.perf_counter()
        try:
            out: T | BaseException = work(c)
        except Exception as e:  # one latent's failure is recorded, the job goes on
            out = e
        return out, time.perf_counter() - t

    def finish(latent: int, out: T | BaseException, seconds: float) -> None:
        clock.seconds["work"] += seconds
        if isinstance(out, BaseException):
            clock.failed[latent] = _error(out)
        write(latent, out, seconds)
        since["rows"] += 1
        if since["rows"] >= checkpoint.latents or time.perf_counter() - since["time"] >= checkpoint.seconds:
            save()
        bar.update(1)

    def read_chunk(part: list[int]) -> list[tuple[int, LatentContexts]]:
        got = []
        for latent in part:
            t = time.perf_counter()
            try:
                c = read(latent)
            except Exception as e:
                clock.seconds["gather"] += time.perf_counter() - t
                finish(latent, e, 0.0)
                continue
            clock.seconds["gather"] += time.perf_counter() - t
            got.append((latent, c))
        if prepare is not None and got:
            t = time.perf_counter()
            with contextlib.suppress(Exception):  # each latent's own work meets the same failure and records it
                prepare([c for _, c in got])
            clock.seconds["work"] += time.perf_counter() - t
        return got

    bar = tqdm(total=len(latents), desc=desc, unit="latent", disable=not progress)
    try:
        with bar, ThreadPoolExecutor(max_workers=concurrency) as pool:
            flying: dict[Future[tuple[T | BaseException, float]], int] = {}
            step = max(1, chunk)
            for latent, c in (x for k in range(0, len(latents), step) for x in read_chunk(latents[k : k + step])):
                if concurrency == 1:
                    finish(latent, *timed(c))
                    continue
                flying[pool.submit(timed, c)] = latent
                while len(flying) >= concurrency:
                    done, _ = wait(flying, return_when=FIRST_COMPLETED)
                    for f in done:
                        finish(flying.pop(f), *f.result())
            for f in list(flying):
                finish(flying.pop(f), *f.result())
    finally:
        save()  # what finished is kept, also when the job stops on an exception (Ctrl-C)
    clock.seconds["total"] = time.perf_counter() - start
    # with threads, summed work time exceeds wall time; report the wall time not spent gathering or committing
    rest = clock.seconds["total"] - clock.seconds["gather"] - clock.seconds["commit"]
    clock.seconds["work"] = min(clock.seconds["work"], rest)
    return clock
