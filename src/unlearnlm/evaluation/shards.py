"""Evaluation on several processes (``torchrun`` / ``accelerate launch``): rows split, records joined.

Each set's rows are dealt out round-robin (every shard gets the same mix of short and long rows;
the dealing goes on from set to set, so no process takes every set's extra row); every process
runs the one-process inference (``inference.infer_sets``, length-sorted batches within its shard)
on its shard, and the judges on its generations; the records are gathered on the main process
in row order. The main process alone scores, bootstraps and writes; the others receive its
summary. One process: the shard is every row and nothing is exchanged.

A model whose parameters are themselves sharded over the processes (FSDP, DeepSpeed ZeRO-3)
runs collective operations in every forward, so every process must run the same forwards:
such a model is evaluated on every row by every process (the main process keeps its records).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    count: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_processes() -> int:
    """How many processes the launcher started (torchrun and accelerate launch set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def processes() -> Processes:
    """This process's place in the process group: joined first when launched with several
    processes and not yet joined (``unlearnlm evaluate`` under torchrun; a training run's
    Trainer has joined already). accelerate's PartialState picks gloo on CPU, nccl on GPUs,
    and gives each process its own GPU."""
    import torch.distributed as dist

    if launched_processes() > 1 and not (dist.is_available() and dist.is_initialized()):
        from accelerate import PartialState

        PartialState()
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size())
    return Processes()


def from_main(value: T, group: Processes) -> T:
    """The main process's ``value`` on every process."""
    if group.count == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def parameters_sharded(model) -> bool:
    """Whether ``model``'s parameters are split over the processes (FSDP or DeepSpeed ZeRO-3)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    try:
        from torch.distributed.fsdp import FSDPModule  # FSDP2's fully_shard
    except ImportError:  # older torch
        FSDPModule = FullyShardedDataParallel
    if any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules()):
        return True
    return any(hasattr(p, "ds_id") for p in model.parameters())  # ZeRO-3 partitioned parameters


def first_row(group: Processes, dealt: int) -> int:
    """The first row of a set this process takes when ``dealt`` rows of earlier sets were dealt out
    before it: row i goes to process (dealt + i) mod N."""
    return (group.rank - dealt) % group.count


def shard(rows: Sequence[T], group: Processes, dealt: int = 0) -> list[T]:
    """This process's rows of a set (see ``first_row``)."""
    return list(rows[first_row(group, dealt) :: group.count])


def infer_across_processes(
    infer: Callable[..., tuple[list[list[dict]], Any]],
    model,
    sets: Sequence[tuple[Any, Sequence[dict]]],
    group: Processes,
) -> tuple[Optional[list[list[dict]]], list[Any], dict]:
    """Every set's records in row order on the main process (None on the others), every process's
    ``infer`` extra (its timings), and how the rows were split: {"processes", "rows_per_process"}.

    ``infer(sets)`` runs the one-process inference on the given (set, rows) pairs and returns
    (records per set, extra)."""
    total = sum(len(rows) for _, rows in sets)
    if group.count == 1:
        records, extra = infer(sets)
        return records, [extra], {"processes": 1, "rows_per_process": [total]}
    if parameters_sharded(model):
        # Every process runs the same forwards (see the module's docstring); rows are not split.
        records, extra = infer(sets)
        extras = _gather(extra, group)
        return (records if group.is_main else None), extras, {
            "processes": group.count, "rows_per_process": [total] * group.count, "rows_split": False}
    dealt = [sum(len(rows) for _, rows in sets[:k]) for k in range(len(sets))]
    mine = [(eval_set, shard(rows, group, dealt[k])) for k, (eval_set, rows) in enumerate(sets)]
    if any(rows for _, rows in mine):
        records, extra = infer(mine)
    else:  # more processes than rows: nothing to run here
        records, extra = [[] for _ in mine], None
    gathered = _gather((records, extra, sum(len(rows) for _, rows in mine)), group)
    split = {"processes": group.count, "rows_per_process": [rows for _, _, rows in gathered]}
    if not group.is_main:
        return None, [], split
    joined = []
    for k, (_, rows) in enumerate(sets):
        in_order: list[Optional[dict]] = [None] * len(rows)
        for rank, (shard_records, _, _) in enumerate(gathered):
            for j, record in enumerate(shard_records[k]):
                index = first_row(Processes(rank, group.count), dealt[k]) + j * group.count
                in_order[index] = dict(record, index=index)
        if any(r is None for r in in_order):
            raise RuntimeError("a process returned fewer records than the rows it was given")
        joined.append(in_order)
    return joined, [extra for _, extra, _ in gathered if extra is not None], split


def _gather(value: T, group: Processes) -> list[T]:
    """Every process's ``value`` on the main process, in rank order (an empty list elsewhere)."""
    import torch.distributed as dist

    received: Optional[list] = [None] * group.count if group.is_main else None
    dist.gather_object(value, received, dst=0)
    return received if group.is_main else []
