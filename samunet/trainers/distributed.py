"""DDP through torchrun: rank/world from the environment torchrun sets; rank 0 logs and writes."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def init_distributed(device):
    info = DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info


def barrier(info):
    if info.enabled:
        dist.barrier()


def shutdown(info, finished=False):
    """Leave the process group. After a run that ended normally every rank first waits for the others, so none
    tears down its connections while a peer still holds them (gloo can then abort the process, and torchrun
    would kill the other ranks with it); after an error, leave at once rather than wait for a rank that failed."""
    if info.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
