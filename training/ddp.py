"""Multi-process training for ``fcn-train``: the process group torchrun describes, and the few
collectives the loop needs.

Run ``torchrun --nproc_per_node N -m fcn_deploy.training.train ...``: torchrun sets
``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``; :func:`init` joins the group (gloo on CPU, nccl on
CUDA; the nccl path is unverified on hardware). In a single process every helper here is a
no-op, so the loop calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence

import torch


@dataclass
class Dist:
    """This process's place in the group (one process: world 1, rank 0)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0


def init(device_type: str) -> Dist:
    """Join the process group torchrun set up (nothing to join when ``WORLD_SIZE`` <= 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(world=world, rank=rank, local_rank=local_rank)


def broadcast_floats(values: Sequence[float], group: Dist) -> List[float]:
    """Rank 0's ``values`` on every rank (float64, so a Python float arrives unchanged)."""
    if group.world == 1:
        return list(values)
    import torch.distributed as dist

    # nccl moves only CUDA tensors (the current device: train() sets it per rank).
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.broadcast(tensor, 0)
    return tensor.tolist()


def all_reduce_(tensor: torch.Tensor, group: Dist) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (on the training device: nccl takes no CPU tensors)."""
    if group.world > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def barrier(group: Dist) -> None:
    if group.world > 1:
        import torch.distributed as dist

        dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device, group: Dist) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several processes (DDP copies rank
    0's weights to the others here), else ``model`` itself."""
    if group.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
