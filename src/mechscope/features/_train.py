"""Training a sparse dictionary: resumable, deterministic, and loud about non-finite losses.

The loop is split into ``step`` (one optimiser update), ``log`` (progress bar and history) and
``checkpoint`` (atomic save of everything needed to continue). The data order is a pure function of the
seed and the step, and the loop draws no other random numbers, so a run killed at any point and resumed from
its last checkpoint ends in the same state as one that never stopped.

Objective: ``fvu + coeff * sparsity + auxk_coeff * auxk`` (terms of ``DictionaryOutput``), with ``coeff`` the
dictionary's ``penalty_coeff``: ``l1_coeff`` (relu), ``l0_coeff`` (jumprelu) or 0 (topk, batchtopk), under Adam.
Decoder rows are kept at unit norm with the parallel part of their gradient removed before each update.

Distributed (``torchrun --nproc_per_node N``; see ``_distributed``): every rank runs this loop on the same
data and takes its own block of each global batch (``_shard``); the dictionary is wrapped in
DistributedDataParallel (``_wrap``), whose gradient averaging, with the loss terms scaled by the dictionary
(``Dictionary.process_group``), gives the gradient of the global batch. ``b_dec`` is initialised from the
whole first global batch and broadcast from rank 0 when DDP wraps the model; the fired-latent counts and the
logged statistics are all-reduced once per step; the decoder update is then the same on every rank. Rank 0
alone writes checkpoints while the others wait at a barrier, and every rank resumes from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mechscope._cache import atomic_dir, atomic_write_bytes
from mechscope._errors import MismatchError, NonFiniteError
from mechscope.core import _distributed as distributed
from mechscope.features._dictionary import (
    BDecInit,
    Dictionary,
    DictionaryConfig,
    DictionaryOutput,
    build_dictionary,
    check_widths,
)
from mechscope.features._io import load_dictionary, save_dictionary
from mechscope.features._kinds import JumpReLUConfig, ReLUConfig

Batch = tuple[Tensor, Tensor | None]  # (input rows, target rows or None for an autoencoder)
Data = Tensor | tuple[Tensor, Tensor] | Iterable[Tensor | tuple[Tensor, Tensor]]

# Fields that may change between a run and its resumption: they set how long and how often, not what.
_SCHEDULE_FIELDS = frozenset(
    {"n_tokens", "checkpoint_every", "checkpoint_minutes", "keep_checkpoints", "log_every", "max_loss_ratio"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a dictionary training run (with the data)."""

    dictionary: DictionaryConfig
    """Architecture and shape of the dictionary (kind, d_in, d_sae, k, ...)."""
    lr: float = 1e-3
    """Adam learning rate (constant)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates."""
    batch_size: int = 4096
    """Rows per optimiser step, summed over ranks when distributed (each rank takes ``batch_size / N``)."""
    n_tokens: int = 10_000_000
    """Rows to train on in total; ``n_tokens // batch_size`` steps (fewer if the data run out)."""
    seed: int = 0
    """Seeds the initialisation and the order in which tensor data are visited."""
    l1_coeff: float = ReLUConfig.l1_coeff
    """Weight of the decoder-norm-weighted L1 penalty (relu only); in units of 1 / activation norm."""
    l0_coeff: float = JumpReLUConfig.l0_coeff
    """Weight of the straight-through L0 penalty (jumprelu only)."""
    auxk_coeff: float = 1 / 32
    """Weight of the AuxK dead-latent loss (Gao et al. 2024 use 1/32); 0 disables it."""
    k_aux: int | None = None
    """Dead latents used by AuxK; None uses half the target width (sparsify's choice)."""
    dead_after_tokens: int = 1_000_000
    """A latent that has not fired for this many rows counts as dead (AuxK target, dead % in the log)."""
    normalize_decoder: bool = True
    """Keep decoder rows at unit norm, projecting their gradients onto the sphere."""
    b_dec_init: BDecInit = "geometric_median"
    """Initial ``b_dec`` from the first batch of targets: ``geometric_median``, ``mean`` or ``zeros``."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (a final one is always written)."""
    checkpoint_minutes: float = 5.0
    """Minutes of training between checkpoints, whichever of this and ``checkpoint_every`` comes first; a
    checkpoint is also written when the run is interrupted (Ctrl-C, SIGTERM)."""
    max_loss_ratio: float = 1e3
    """Stop, keeping the last good checkpoint, when the loss exceeds this multiple of the first step's loss
    (the run has diverged: lower ``lr``)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept on disk."""
    log_every: int = 10
    """Steps between progress-bar updates and history entries."""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.n_tokens < self.batch_size:
            raise ValueError("need lr > 0, batch_size >= 1 and n_tokens >= batch_size")
        if min(self.l1_coeff, self.l0_coeff, self.auxk_coeff) < 0:
            raise ValueError("loss coefficients must be non-negative")
        if self.k_aux is not None and self.k_aux < 1:
            raise ValueError(f"k_aux must be positive, got {self.k_aux}")
        if min(self.checkpoint_every, self.keep_checkpoints, self.log_every, self.dead_after_tokens) < 1:
            raise ValueError("checkpoint_every, keep_checkpoints, log_every and dead_after_tokens must be >= 1")
        if self.checkpoint_minutes <= 0 or self.max_loss_ratio <= 1:
            raise ValueError("checkpoint_minutes must be > 0 and max_loss_ratio > 1")

    @property
    def n_steps(self) -> int:
        """Optimiser steps in the full run."""
        return self.n_tokens // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


class NonFiniteLossError(NonFiniteError):
    """The training loss became NaN or infinite, or exploded; the last good checkpoint is left untouched."""


class TrainLog(NamedTuple):
    """One logged training step."""

    step: int
    """Optimiser steps done."""
    tokens: int
    """Rows trained on so far."""
    loss: float
    """Total objective of the step's batch."""
    fvu: float
    """Fraction of variance unexplained on the step's batch."""
    l0: float
    """Mean active latents per row on the step's batch."""
    dead_fraction: float
    """Fraction of latents that have not fired for ``dead_after_tokens`` rows."""


class TrainResult(NamedTuple):
    """A finished (or resumed and finished) training run."""

    dictionary: Dictionary
    """The trained dictionary (eval mode); also saved at the run directory's root."""
    steps: int
    """Optimiser steps done in total."""
    tokens: int
    """Rows trained on in total."""
    history: tuple[TrainLog, ...]
    """Entries logged by this call (not by earlier, interrupted calls)."""
    checkpoint: Path
    """The last checkpoint written."""


class _StepStats(NamedTuple):
    """A step's statistics over the global batch (the same on every rank)."""

    loss: float
    fvu: float
    l0: float


@dataclass
class _State:
    model: Dictionary
    optimizer: torch.optim.Adam
    step: int
    tokens: int
    since_fired: Tensor  # [d_sae] int64: rows since each latent was last non-zero
    provenance: dict | None = None  # what the data come from (model, weights, store, site), kept in checkpoints
    pre_buffer: Tensor | None = None  # [batch d_sae] workspace of the sparse kinds' pre-activations, reused


def train(
    config: TrainConfig,
    data: Data,
    out_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    provenance: dict | None = None,
) -> TrainResult:
    """Train a dictionary on ``data``, checkpointing to ``out_dir`` and resuming from it if present.

    ``data`` is a tensor of input rows, an ``(inputs, targets)`` pair of tensors (transcoders), or an
    iterable of such batches. Tensors are visited in an order set by ``config.seed`` and the step; an
    iterable must yield the same batches every time it is iterated, since a resumed run skips the batches
    already consumed. Batches are moved to ``device``, where the dictionary is trained. The final
    dictionary is saved at ``out_dir`` (``load_dictionary(out_dir)``).

    Under ``torchrun --nproc_per_node N`` (or in an initialised process group) every process calls this
    with the same arguments: each takes ``1/N`` of every batch and they train one dictionary together,
    equal to the single-process one up to float rounding. The process group is started from torchrun's
    environment when none exists (gloo, or NCCL for CUDA) and destroyed on return; ``device="cuda"`` means
    the process's local GPU. Only rank 0 writes files and shows progress.

    ``provenance`` (what the data come from: model, weights checksum, store, site) is kept in every checkpoint and
    saved with the dictionary; resuming with another provenance raises ``MismatchError`` showing both.
    Checkpoints come every ``checkpoint_every`` steps or ``checkpoint_minutes``, whichever is first, and when the
    run is interrupted (SIGINT, SIGTERM: the step in progress finishes, a checkpoint is written, then
    ``KeyboardInterrupt`` is raised).
    """
    out_dir, device = Path(out_dir), distributed.local_device(torch.device(device))
    with distributed.group_from_env(device):
        return _train(config, data, out_dir, device, progress, provenance)


def _train(
    config: TrainConfig, data: Data, out_dir: Path, device: torch.device, progress: bool, provenance: dict | None
) -> TrainResult:
    rank, world = distributed.rank_world()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world} processes")
    state = _resume(config, out_dir, device, provenance)
    batches = _batches(data, config, 0 if state is None else state.step, rank, world, device)
    if state is None:
        first = next(batches, None)
        if first is None:
            raise ValueError("the data yielded no batch")
        check_widths(config.dictionary, *first)
        state = _fresh(config, _whole_target(first), device, provenance)
        batches = itertools.chain([first], batches)
    model = _wrap(state.model, device)
    history: list[TrainLog] = []
    last = _latest(out_dir)
    bar = tqdm(total=config.n_steps, initial=state.step, disable=not progress or rank != 0, desc="dictionary")
    first_loss: float | None = None
    since = time.monotonic()
    try:
        with _deferred_signals(enabled=world == 1) as signalled:
            for x, y in batches:
                if state.step >= config.n_steps:
                    break
                try:
                    stats = step(state, model, config, x, y, world)
                    first_loss = stats.loss if first_loss is None else first_loss
                    if stats.loss > config.max_loss_ratio * max(first_loss, 1e-12):
                        raise NonFiniteLossError(
                            f"loss {stats.loss:.3g} at step {state.step} is over {config.max_loss_ratio:g}x the first "
                            f"step's {first_loss:.3g}: the run diverged (lower lr)"
                        )
                except NonFiniteLossError as err:
                    kept = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
                    raise NonFiniteLossError(f"{err}; training stopped, {kept}", hint=_LOWER_LR) from None
                if state.step % config.log_every == 0:
                    history.append(log(state, config, stats, bar))
                due = time.monotonic() - since >= 60 * config.checkpoint_minutes
                if state.step % config.checkpoint_every == 0 or due or signalled:
                    last, since = checkpoint(state, config, out_dir), time.monotonic()
                if signalled:
                    raise KeyboardInterrupt(f"interrupted at step {state.step}; checkpoint written to {last}")
        bar.update(state.step - bar.n)
    finally:
        bar.close()
        state.model.process_group = None
    if last is None or last.name != _step_name(state.step):
        last = checkpoint(state, config, out_dir)
    if rank == 0:
        save_dictionary(state.model, out_dir, provenance=provenance)
    distributed.barrier()
    return TrainResult(state.model.eval(), state.step, state.tokens, tuple(history), last)


def step(
    state: _State, model: nn.Module, config: TrainConfig, x: Tensor, y: Tensor | None, world: int = 1
) -> _StepStats:
    """One optimiser update on this rank's rows of a batch.

    A non-finite loss raises ``NonFiniteLossError`` on every rank before the weights are touched.
    """
    dictionary = state.model
    dead = state.since_fired >= config.dead_after_tokens if config.auxk_coeff > 0 else None
    out: DictionaryOutput = model(x, y, dead_mask=dead, k_aux=config.k_aux, pre_out=_pre_buffer(state, len(x)))
    coeff = dictionary.penalty_coeff(config)
    loss = out.fvu + coeff * out.sparsity + config.auxk_coeff * out.auxk
    stats, fired = _reduce_stats(out, loss, dictionary.process_group)
    if not math.isfinite(stats.loss):
        raise NonFiniteLossError(f"loss is {stats.loss} at step {state.step + 1}")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.normalize_decoder:
        dictionary.project_decoder_grad_()
    state.optimizer.step()
    if config.normalize_decoder:
        dictionary.normalize_decoder_()
    dictionary.observe(out)
    state.since_fired += x.shape[0] * world
    state.since_fired[fired] = 0
    state.step += 1
    state.tokens += x.shape[0] * world
    return stats


def _pre_buffer(state: _State, rows: int) -> Tensor | None:
    """The step's pre-activation buffer (sparse kinds), reused while the batch keeps its size.

    Nothing keeps a step's output past the step, so the next one may overwrite it.
    """
    dictionary = state.model
    if not dictionary.sparse_forward:
        return None
    shape = (rows, dictionary.cfg.d_sae)
    if state.pre_buffer is None or state.pre_buffer.shape != shape:
        state.pre_buffer = dictionary.W_enc.new_empty(shape)
    return state.pre_buffer


def _reduce_stats(out: DictionaryOutput, loss: Tensor, group: distributed.Group) -> tuple[_StepStats, Tensor]:
    """Loss, FVU and L0 of the global batch and the latents that fired in it, in one all-reduce."""
    batch, d_sae = out.pre_acts.shape
    if out.sparse is None:
        active = out.latents.detach() > 0
        fired, l0 = active.any(0).float(), active.sum(-1).float().mean()
    else:  # from the kept coordinates: no [batch d_sae] pass
        fired = out.sparse.fired(d_sae).clamp_max(1).float()
        l0 = (out.sparse.values.detach() > 0).sum().float() / batch
    # Each rank's loss terms average to the global batch's (Dictionary.process_group), and so does L0.
    packed = torch.cat([fired, torch.stack([loss.detach(), out.fvu.detach(), l0]).float()])
    packed = distributed.all_reduce(packed, group)
    world = distributed.world_size(group)
    loss_sum, fvu_sum, l0_sum = packed[d_sae:].tolist()
    return _StepStats(loss_sum / world, fvu_sum / world, l0_sum / world), packed[:d_sae] > 0


def log(state: _State, config: TrainConfig, stats: _StepStats, bar: Any) -> TrainLog:
    """Record the step's loss, FVU, L0 and dead fraction, and show them on the progress bar."""
    entry = TrainLog(
        step=state.step,
        tokens=state.tokens,
        loss=stats.loss,
        fvu=stats.fvu,
        l0=stats.l0,
        dead_fraction=float((state.since_fired >= config.dead_after_tokens).float().mean()),
    )
    bar.update(state.step - bar.n)
    bar.set_postfix(
        loss=f"{entry.loss:.4g}",
        fvu=f"{entry.fvu:.3f}",
        l0=f"{entry.l0:.1f}",
        dead=f"{100 * entry.dead_fraction:.1f}%",
    )
    return entry


def checkpoint(state: _State, config: TrainConfig, out_dir: Path) -> Path:
    """Atomically write ``out_dir/checkpoints/step_N`` and point ``checkpoints/latest`` at it.

    Distributed, rank 0 writes (every rank holds the same state) while the others wait at a barrier.
    """
    final = out_dir / "checkpoints" / _step_name(state.step)
    if distributed.rank_world()[0] == 0:
        _write_checkpoint(state, config, final)
    distributed.barrier()
    return final


def _write_checkpoint(state: _State, config: TrainConfig, final: Path) -> None:
    root = final.parent
    tensors, groups = _optimizer_tensors(state.optimizer)
    tensors["since_fired"] = state.since_fired.cpu()
    meta = {"step": state.step, "tokens": state.tokens, "param_groups": groups, "config": config.to_dict(),
            "provenance": state.provenance}  # fmt: skip
    with atomic_dir(final) as tmp:
        save_dictionary(state.model, tmp)
        atomic_write_bytes(tmp / "trainer.safetensors", save(tensors))
        atomic_write_bytes(tmp / "trainer.json", json.dumps(meta, indent=2).encode())
    atomic_write_bytes(root / "latest", final.name.encode())
    for old in sorted(root.glob("step_*"))[: -config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _step_name(step: int) -> str:
    return f"step_{step:09d}"


def _latest(out_dir: Path) -> Path | None:
    pointer = out_dir / "checkpoints" / "latest"
    return pointer.parent / pointer.read_text().strip() if pointer.is_file() else None


def _fresh(config: TrainConfig, target: Tensor, device: torch.device, provenance: dict | None = None) -> _State:
    model = build_dictionary(config.dictionary, seed=config.seed).to(device)
    model.init_b_dec_(target, config.b_dec_init)
    optimizer = _adam(model, config, device)
    since_fired = torch.zeros(config.dictionary.d_sae, dtype=torch.int64, device=device)
    return _State(model, optimizer, 0, 0, since_fired, provenance)


def _adam(model: Dictionary, config: TrainConfig, device: torch.device) -> torch.optim.Adam:
    # The fused kernel does the whole update in one pass per tensor (about 4x faster than foreach on CPU).
    fused = device.type in ("cpu", "cuda") and all(
        p.dtype in (torch.float32, torch.float64) for p in model.parameters()
    )
    return torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.adam_betas, fused=fused or None)


def _resume(config: TrainConfig, out_dir: Path, device: torch.device, provenance: dict | None) -> _State | None:
    path = _latest(out_dir)
    if path is None:
        return None
    meta = json.loads((path / "trainer.json").read_text())
    _check_same_run(meta["config"], config.to_dict(), path)
    saved = meta.get("provenance")
    differ = sorted(
        k
        for k in (saved or {}).keys() | (provenance or {}).keys()
        if k not in _WHERE_FIELDS and (saved or {}).get(k) != (provenance or {}).get(k)
    )
    if saved is not None and provenance is not None and differ:
        raise MismatchError(
            f"{path} was trained on other data (differs in {differ}):\n"
            f"  checkpoint: {saved}\n  now:        {provenance}",
            hint="resume with the same store and site, or train into a fresh folder",
        )
    model = load_dictionary(path).train().to(device)
    optimizer = _adam(model, config, device)
    tensors = load_file(path / "trainer.safetensors", device=str(device))
    since_fired = tensors.pop("since_fired")
    _load_optimizer(optimizer, tensors, meta["param_groups"])
    return _State(
        model, optimizer, meta["step"], meta["tokens"], since_fired, saved if saved is not None else provenance
    )


_WHERE_FIELDS = frozenset({"store_path"})  # provenance fields that say where, not what: a moved store still matches
_LOWER_LR = "lower --lr, or resume from the last good checkpoint with a smaller one in a fresh folder"


@contextmanager
def _deferred_signals(*, enabled: bool) -> Iterator[list[int]]:
    """While training, SIGINT/SIGTERM set a flag (the yielded list becomes non-empty) instead of stopping the step.

    The loop finishes the step, writes a checkpoint and raises ``KeyboardInterrupt``; a second signal stops at
    once. Only in the main thread of a single process (signal handlers cannot be set elsewhere; under torchrun every
    rank would have to agree on the step).
    """
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _check_same_run(saved: dict, current: dict, path: Path) -> None:
    differ = sorted(
        k for k in saved.keys() | current.keys() if k not in _SCHEDULE_FIELDS and saved.get(k) != current.get(k)
    )
    if differ:
        raise ValueError(f"{path} was written by a run with different {differ}; use a fresh out_dir")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict]]:
    # Adam's state is all tensors (step, exp_avg, exp_avg_sq): safetensors holds it exactly, no pickle.
    sd = optimizer.state_dict()
    tensors = {f"optim.{pid}.{name}": value.cpu() for pid, st in sd["state"].items() for name, value in st.items()}
    return tensors, json.loads(json.dumps(sd["param_groups"]))


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _wrap(model: Dictionary, device: torch.device) -> nn.Module:
    """The module to call for a step: the dictionary itself, or wrapped in DistributedDataParallel."""
    group = distributed.world_group()
    if group is None:
        return model
    model.process_group = group
    # DDP's constructor broadcasts rank 0's parameters and buffers (b_dec's data init included) to every rank.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _whole_target(first: Batch) -> Tensor:
    """The first global batch's targets (every rank's block, in order) for the ``b_dec`` init."""
    x, y = first
    return distributed.all_gather(x if y is None else y, distributed.world_group())


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    """Rank ``rank``'s block of ``len // world`` rows (the last ``len % world`` rows are left out)."""
    x, y = batch
    if world == 1:
        return x, y
    n = len(x) // world
    if n == 0:
        raise ValueError(f"a batch of {len(x)} rows cannot be split over {world} processes")
    rows = slice(rank * n, (rank + 1) * n)
    return x[rows], None if y is None else y[rows]


def _batches(
    data: Data, config: TrainConfig, start: int, rank: int, world: int, device: torch.device
) -> Iterator[Batch]:
    """Batches from step ``start`` on, each cut to this rank's rows and moved to ``device``."""
    if isinstance(data, Tensor) or (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor)):
        source = _tensor_batches(cast(Tensor | tuple[Tensor, Tensor], data), config, start)
    else:
        source = itertools.islice((_as_batch(item) for item in data), start, None)
    return (_to(_shard(batch, rank, world), device) for batch in source)


def _to(batch: Batch, device: torch.device) -> Batch:
    x, y = batch
    return x.to(device), None if y is None else y.to(device)


def _as_batch(item: Tensor | tuple[Tensor, Tensor]) -> Batch:
    return (item, None) if isinstance(item, Tensor) else (item[0], item[1])


def _tensor_batches(data: Tensor | tuple[Tensor, Tensor], config: TrainConfig, start: int) -> Iterator[Batch]:
    x, y = _as_batch(data)
    if y is not None and len(y) != len(x):
        raise ValueError(f"inputs have {len(x)} rows but targets have {len(y)}")
    per_epoch = len(x) // config.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(x)} rows cannot fill one batch of {config.batch_size}")
    order, order_epoch = torch.empty(0, dtype=torch.int64), -1
    for s in itertools.count(start):
        epoch, j = divmod(s, per_epoch)
        if epoch != order_epoch:  # each epoch visits every row once, in an order fixed by (seed, epoch)
            gen = torch.Generator().manual_seed(_seed(config.seed, "data", epoch))
            order, order_epoch = torch.randperm(len(x), generator=gen), epoch
        rows = order[j * config.batch_size : (j + 1) * config.batch_size]
        yield x[rows], None if y is None else y[rows]


def _seed(*parts: object) -> int:
    """Derive a 63-bit seed from ``parts`` (independent streams for data epochs)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
