"""Sharding evaluation work across ranks and gathering the results on rank 0.

Work items (episodes, batches of images, sequences) are listed deterministically, rank ``r`` of ``world``
takes items ``r::world``, and each rank returns *sums* (or per-item records), so merging the ranks' results
reproduces the single-process result exactly. Under ``torchrun`` the environment variables ``RANK`` /
``WORLD_SIZE`` select the shard and the results travel with ``torch.distributed`` (gloo, CPU objects).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share of the work: items ``rank::world_size``."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"invalid shard: rank {self.rank} of world size {self.world_size}")

    def take(self, items: Sequence[T]) -> list[T]:
        """The items this rank evaluates, in their original order."""
        return list(items[self.rank :: self.world_size])

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def shard_from_env() -> Shard:
    """The shard of this process: from ``RANK`` / ``WORLD_SIZE`` (set by torchrun), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Shard(rank, world)


def init_distributed(shard: Shard) -> bool:
    """Join the process group (gloo) when running sharded; returns True if this call initialised it."""
    if shard.world_size == 1:
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    # gloo: results are small Python objects gathered on the CPU, whatever device the model runs on.
    dist.init_process_group(backend="gloo")
    log.info("rank %d of %d joined the process group", shard.rank, shard.world_size)
    return True


def gather_to_main(obj: Any, shard: Shard) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the other ranks).

    With one process this is ``[obj]`` and needs no process group.
    """
    if shard.world_size == 1:
        return [obj]
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("gather_to_main with world_size > 1 needs torch.distributed initialised")
    out: list[Any] | None = [None] * shard.world_size if shard.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(shard: Shard) -> None:
    if shard.world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def shutdown(initialised_here: bool) -> None:
    if initialised_here:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
