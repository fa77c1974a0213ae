"""Process-group setup for ``torchrun``: gloo on the CPU, nccl on CUDA; DDP or FSDP wrapping."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from seggpt import devices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = devices.resolve_device(pref)  # one that this machine lacks, or misspelt: one line naming those it has
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def setup(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return DistInfo(rank, world, local_rank, dev)


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo, kind: str) -> nn.Module:
    """DistributedDataParallel, or FSDP (fully_shard) sharding each transformer block (ViT-L), when distributed."""
    if not info.enabled:
        return model
    if kind == "fsdp":
        # FSDP2 (fully_shard): shards every block, then the rest; works with gloo on the CPU and nccl on CUDA.
        # The module is changed in place (parameters become sharded DTensors), so build the optimiser after.
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world,))
        for blk in model.blocks:
            fully_shard(blk, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def all_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the identity when alone)."""
    x = x.detach().clone()
    if info.enabled:
        dist.all_reduce(x)
        x /= info.world
    return x


def all_max(value: int, info: DistInfo) -> int:
    """The largest of an int over ranks (itself when alone), e.g. a reason to stop that any rank may have."""
    if not info.enabled:
        return value
    x = torch.tensor(float(value), device=info.device)  # nccl reduces only GPU tensors
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return int(x.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
