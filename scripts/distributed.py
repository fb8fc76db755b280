"""Multi-process training and prediction under ``torchrun`` (DistributedDataParallel; NCCL on
GPU, gloo on CPU).

A run with N processes and ``--batch-size B`` is the single-process run with batch B: every
rank draws the same random numbers for the whole batch, trains on its own slice of it,
BatchNorm statistics are synchronised over the ranks, and each rank's losses are weighted by
its share of the batch before DDP averages the gradients.
"""
import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class Context:
    """This process's place in the run; with one process every method is a no-op."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device_type: str = "cpu"

    @property
    def enabled(self):
        return self.world > 1

    @property
    def is_main(self):
        return self.rank == 0

    def broadcast(self, obj):
        """Rank 0's ``obj`` (any picklable value) on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (any picklable value), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        box = [None] * self.world
        dist.all_gather_object(box, obj)
        return box

    def sum(self, value: int) -> int:
        """The sum of ``value`` over the ranks; also a barrier."""
        if not self.enabled:
            return value
        device = f"cuda:{self.local_rank}" if self.device_type == "cuda" else "cpu"
        return int(all_reduce_sum(torch.tensor([value], dtype=torch.long, device=device)).item())

    def close(self, wait=True):
        """Wait for every rank (unless ``wait=False``: a rank leaving on an error or a stop, which
        the others may never meet at a barrier), then leave the process group."""
        if self.enabled and dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def launched_as_rank_zero() -> bool:
    """True unless torchrun started this process as another rank than 0: usable before
    ``init`` (e.g. in a signal handler), where no Context exists yet."""
    return os.environ.get("RANK", "0") == "0"


def init(device_type: str, timeout: Optional[datetime.timedelta] = None) -> Context:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); on CUDA each process
    takes the GPU of its local rank. ``timeout``: how long a rank may wait for the others
    (torch's default when None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device_type=device_type)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                **({"timeout": timeout} if timeout else {}))
    return Context(dist.get_rank(), world, local_rank, device_type)


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole batch across ranks, on any device
    (``nn.SyncBatchNorm`` only runs on GPUs). The all-reduce is differentiable, so gradients
    are exact too."""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        with warnings.catch_warnings():  # its replacement is still a private API
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce
        c = x.shape[1]
        xf = x.float()
        local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), xf.new_tensor([x.numel() / c])])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            total = all_reduce(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
            self.num_batches_tracked += 1
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


def sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Swap every BatchNorm2d for its synchronised version (same parameter names)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync.to(child.weight.device))
        else:
            sync_batchnorm(child, device_type)
    return module


def all_reduce_sum(tensor):
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor
