"""The one training loop: epochs of optimiser steps under an optional wall-clock budget.

Fine-tuning (trainers/trainer.py) and self-supervised pretraining (pretraining/pretrainer.py) are both
this loop; a subclass says what a batch is (`epoch_batches`, `epoch_inputs`), what the loss is
(`compute_loss`), what happens after an epoch (`end_epoch`: evaluate, log, checkpoint) and at the end
(`finish`). The loop owns the rest: AdamW with linear warm-up and polynomial decay, mixed precision,
gradient clipping, DDP wrapping and rank shares, per-epoch seeding (a resumed run draws what an
uninterrupted one would), and the time budget (the LR decay is fitted, and re-fitted, to the epochs that fit it).
"""
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from samunet.models.amp import autocast_factory, grad_scaler
from samunet.trainers.distributed import barrier
from samunet.trainers.lr_schedule import warmup_poly

BUDGET_ESTIMATE_EPOCHS = 3  # the time budget's estimate of an epoch: the longest of the last this many


class EpochLoop:
    """Subclasses set `cfg` (epochs, iters_per_epoch, seed, grad_clip, warmup_fraction, amp,
    time_budget_minutes, weight_decay), `device`, `dist`, `output` and `show_progress`, then call
    `set_up_optimization`."""

    def start_clock(self):
        self.started = time.perf_counter()  # the time budget counts from here
        self.start_epoch = 0
        self.prepared = False

    def set_up_optimization(self, module, lr):
        """AdamW over `module`'s trainable parameters, the warm-up + poly schedule, AMP, DDP wrapping."""
        cfg = self.cfg
        self.autocast = autocast_factory(self.device, cfg.amp)
        self.scaler = grad_scaler(self.device, cfg.amp)
        self.trained_parameters = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trained_parameters, lr=lr, weight_decay=cfg.weight_decay)
        total = cfg.epochs * cfg.iters_per_epoch
        warmup = max(1, int(total * cfg.warmup_fraction))
        if cfg.time_budget_minutes is not None:  # total unknown until the first epoch is timed
            warmup = min(warmup, cfg.iters_per_epoch)
        self.scheduler, self.lr_schedule = warmup_poly(self.optimizer, total, warmup)
        self.network = self._wrap(module)

    # --- what subclasses provide ---------------------------------------------------------------
    def epoch_batches(self, epoch):
        """This rank's share of the epoch's batches (anything `epoch_inputs` understands)."""
        raise NotImplementedError

    def epoch_inputs(self, batches):
        """Yield (inputs, targets) on the device, one pair per batch."""
        raise NotImplementedError

    def compute_loss(self, inputs, targets):
        raise NotImplementedError

    def set_train_mode(self):
        raise NotImplementedError

    def end_epoch(self, epoch, losses, seconds):
        """On rank 0 after each epoch (`losses` is short when the budget cut the epoch)."""
        raise NotImplementedError

    def finish(self):
        """On rank 0 after the last epoch."""
        raise NotImplementedError

    def prepare(self):
        """One-time work before the first epoch."""
        self.prepared = True

    # --- the loop ------------------------------------------------------------------------------
    def _wrap(self, module):
        if not self.dist.enabled:
            return module
        ids = [self.dist.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids,
                                       find_unused_parameters=getattr(self, "find_unused_parameters", False))

    def rank_share(self, batches):
        return [b[self.dist.rank :: self.dist.world_size] for b in batches]

    def train_step(self, inputs, targets):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.compute_loss(inputs, targets)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.trained_parameters, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach().item()

    def seconds_left(self):
        """Of the time budget (None without one)."""
        if self.cfg.time_budget_minutes is None:
            return None
        return self.cfg.time_budget_minutes * 60 - (time.perf_counter() - self.started)

    def out_of_time(self):
        """Whether the time budget is spent; rank 0 decides for all ranks."""
        if self.cfg.time_budget_minutes is None:
            return False
        flag = torch.tensor([int(self.dist.is_main and self.seconds_left() <= 0)])
        if self.dist.enabled:
            torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def train_epoch(self, epoch):
        """Train one epoch; returns its losses. Stops early, mid-epoch, when the time budget is spent
        (the whole-epoch estimate of _last_epoch_in_budget can be off when epochs are long or slow down)."""
        self.set_train_mode()
        torch.manual_seed(self.cfg.seed + epoch)  # dropout, masks etc.: same draws after a resume
        batches = self.epoch_batches(epoch)
        losses = []
        bar = tqdm(total=len(batches), desc=f"epoch {epoch}", disable=not self.show_progress, leave=False)
        for inputs, targets in self.epoch_inputs(batches):
            losses.append(self.train_step(inputs, targets))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update()
            if len(losses) < len(batches) and self.out_of_time():
                if self.dist.is_main:
                    self.write_log(f"time budget of {self.cfg.time_budget_minutes:g} min spent after iteration "
                                   f"{len(losses)} of epoch {epoch}: stopping")
                break
        bar.close()
        return losses

    def run(self):
        if not self.prepared:
            self.prepare()
        cycles = []  # this run's seconds per epoch, its evaluation and checkpoints included
        for epoch in range(self.start_epoch, self.cfg.epochs):
            start = time.perf_counter()
            losses = self.train_epoch(epoch)
            if self.dist.is_main:
                self.end_epoch(epoch, losses, time.perf_counter() - start)
            cycles.append(time.perf_counter() - start)
            self.start_epoch = epoch + 1
            barrier(self.dist)
            if self.cfg.time_budget_minutes is not None and (
                    self.out_of_time() or self._last_epoch_in_budget(epoch, cycles) <= epoch):
                if self.dist.is_main:
                    self.write_log(f"time budget of {self.cfg.time_budget_minutes:g} min: stopping after epoch {epoch}")
                break
        if self.dist.is_main:
            self.finish()
        barrier(self.dist)

    def _last_epoch_in_budget(self, epoch, cycles):
        """The last epoch that still fits the time budget, judged from the longest of this run's last few
        epochs (`cycles`: epochs slow down or speed up as a run goes on; the longest, so that the epoch
        the decay ends with still fits, at the price of up to about an epoch left unused). Whenever the
        estimate moves, the LR decay is re-fitted to end there, from the LR it has now: the run stops where
        the LR reaches 0, and no epoch runs at LR 0. Rank 0 decides for all ranks."""
        fitted = self.lr_schedule.last_epoch(self.cfg.iters_per_epoch)
        if epoch >= fitted:  # the decay is complete
            return epoch
        last = torch.tensor([self.cfg.epochs - 1])
        if self.dist.is_main:
            per_epoch = max(cycles[-BUDGET_ESTIMATE_EPOCHS:])
            last[0] = min(self.cfg.epochs - 1, epoch + int(self.seconds_left() // per_epoch))
        if self.dist.enabled:
            torch.distributed.broadcast(last, src=0)
        last = int(last.item())
        if epoch < last != fitted:
            self.lr_schedule.end_after(self.scheduler.last_epoch, (last + 1) * self.cfg.iters_per_epoch)
            if self.dist.is_main:
                self.write_log(f"time budget: {last + 1} epochs fit; the LR decays to 0 by then")
        return last

    def write_log(self, line):
        self.output.mkdir(parents=True, exist_ok=True)
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        with open(self.output / "training_log.txt", "a") as f:
            f.write(stamped + "\n")
        if self.show_progress:
            tqdm.write(stamped)
