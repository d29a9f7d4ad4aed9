"""Run under torchrun (or alone): gradients of the trainable parameters for the first global batch.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_gradient_probe.py PREPROCESSED OUT.pt
Rank 0 saves {name: gradient} after DDP's all-reduce; run alone it saves the single-process gradients.
"""
import sys

import torch

from samunet.trainers.distributed import init_distributed, shutdown
from samunet.trainers.loss import ce_dice_loss
from samunet.trainers.trainer import SamTrainer, TrainConfig


def main(preprocessed, out):
    device = torch.device("cpu")
    info = init_distributed(device)
    config = TrainConfig(strategy="lora_both", backbone="tiny", fold="0", epochs=1, iters_per_epoch=1,
                         batch_size=4, augment=True)
    trainer = SamTrainer(config, preprocessed, f"{out}.rank{info.rank}", device, info, show_progress=False)
    trainer.model.train()
    batches = trainer.rank_share(trainer.sampler.epoch_batches(0, 1, 4))
    inputs, targets = next(iter(trainer.epoch_inputs(batches)))
    ce_dice_loss(trainer.network(inputs), targets).backward()
    if info.is_main:
        torch.save({n: p.grad for n, p in trainer.model.named_parameters() if p.requires_grad}, out)
    shutdown(info, finished=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
