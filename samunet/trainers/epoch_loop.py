"""The one training loop: epochs of optimiser steps under an optional wall-clock budget.

Fine-tuning (trainers/trainer.py) and self-supervised pretraining (pretraining/pretrainer.py) are both
this loop; a subclass says what a batch is (`epoch_batches`, `epoch_inputs`), what the loss is
(`compute_loss`), what happens after an epoch (`end_epoch`: evaluate, log, checkpoint) and at the end
(`finish`). The loop owns the rest: AdamW with linear warm-up and polynomial decay, mixed precision,
gradient clipping, DDP wrapping and rank shares, per-epoch seeding (a resumed run draws what an
uninterrupted one would), and the time budget (the LR decay is fitted, and re-fitted, to the iterations that fit
it; the last epoch may end part-way).
"""
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from samunet.models.amp import autocast_factory, grad_scaler
from samunet.trainers.distributed import barrier
from samunet.trainers.lr_schedule import warmup_poly

BUDGET_ESTIMATE_EPOCHS = 3  # the time budget's estimates (per iteration, per epoch end) use the last this many epochs


class EpochLoop:
    """Subclasses set `cfg` (epochs, iters_per_epoch, seed, grad_clip, warmup_fraction, amp,
    time_budget_minutes, weight_decay), `device`, `dist`, `output` and `show_progress`, then call
    `set_up_optimization`."""

    def start_clock(self):
        self.started = time.perf_counter()  # the time budget counts from here
        self.start_epoch = 0
        self.prepared = False
        self.cut_short = False  # whether the time budget ran out inside the last epoch

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
        """On rank 0 after each epoch. `losses` is short in the last epoch of a time budget (the LR decay
        ended there); `self.cut_short` says the budget ran out before that, so there is no time left for
        evaluation."""
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
        """Train one epoch; returns its losses. Under a time budget the epoch ends early where the fitted LR
        decay ends, or where the budget runs out (`cut_short`: the estimate of _fit_budget was too low)."""
        self.set_train_mode()
        torch.manual_seed(self.cfg.seed + epoch)  # dropout, masks etc.: same draws after a resume
        batches = self.epoch_batches(epoch)
        losses = []
        self.cut_short = False
        bar = tqdm(total=len(batches), desc=f"epoch {epoch}", disable=not self.show_progress, leave=False)
        for inputs, targets in self.epoch_inputs(batches):
            losses.append(self.train_step(inputs, targets))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update()
            if len(losses) == len(batches) or self.cfg.time_budget_minutes is None:
                continue
            if self._decay_complete():
                break
            if self.out_of_time():
                self.cut_short = True
                if self.dist.is_main:
                    self.write_log(f"time budget of {self.cfg.time_budget_minutes:g} min spent after iteration "
                                   f"{len(losses)} of epoch {epoch}: stopping")
                break
        bar.close()
        return losses

    def run(self):
        if not self.prepared:
            self.prepare()
        timings = []  # this run's epochs: (training seconds per iteration, seconds of evaluation and checkpoints)
        for epoch in range(self.start_epoch, self.cfg.epochs):
            start = time.perf_counter()
            losses = self.train_epoch(epoch)
            trained = time.perf_counter()
            if self.dist.is_main:
                self.end_epoch(epoch, losses, trained - start)
            self.start_epoch = epoch + 1
            barrier(self.dist)
            timings.append(((trained - start) / max(1, len(losses)), time.perf_counter() - trained))
            if self.cfg.time_budget_minutes is not None and (
                    self.out_of_time() or self._decay_complete() or not self._fit_budget(timings)):
                if self.dist.is_main:
                    self.write_log(f"time budget of {self.cfg.time_budget_minutes:g} min: stopping after epoch {epoch}")
                break
        if self.dist.is_main:
            self.finish()
        barrier(self.dist)

    def _decay_complete(self):
        return self.scheduler.last_epoch >= self.lr_schedule.total

    def _fit_budget(self, timings):
        """Re-fit the LR decay to end with the last iteration that fits the time budget; False when none does.
        The estimate takes the slowest iteration rate and the longest epoch end (evaluation, checkpoints) of
        the last few epochs (runs slow down or speed up as they go), counts whole epochs with their ends, then
        what is left of a last epoch with its end. The decay is re-fitted from the LR it has now whenever the
        estimate moves: no jump, the LR reaches 0 where the run stops, no iteration runs at LR 0, and a run
        whose epochs are a large share of the budget ends part-way through its last epoch instead of leaving
        that epoch's time unused. Rank 0 decides for all ranks."""
        per_epoch = self.cfg.iters_per_epoch
        now = self.scheduler.last_epoch  # iterations so far
        end = torch.tensor([self.cfg.epochs * per_epoch])
        if self.dist.is_main:
            recent = timings[-BUDGET_ESTIMATE_EPOCHS:]
            per_iteration = max(max(t for t, _ in recent), 1e-6)
            epoch_end = max(e for _, e in recent)
            left = self.seconds_left()
            whole = int(left // (per_epoch * per_iteration + epoch_end))
            rest = left - whole * (per_epoch * per_iteration + epoch_end)
            partial = int((rest - epoch_end) // per_iteration) if rest > epoch_end else 0
            end[0] = min(int(end[0]), now + whole * per_epoch + min(partial, per_epoch - 1))
        if self.dist.enabled:
            torch.distributed.broadcast(end, src=0)
        end = int(end.item())
        if end <= now:
            return False
        if end != self.lr_schedule.total:
            self.lr_schedule.end_after(now, end)
            if self.dist.is_main:
                epochs, iterations = divmod(end, per_epoch)
                part = f" and {iterations} iteration{'s' * (iterations > 1)}" if iterations else ""
                self.write_log(f"time budget: {end} iterations fit ({epochs} epochs{part}); the LR decays to 0 by then")
        return True

    def write_log(self, line):
        self.output.mkdir(parents=True, exist_ok=True)
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        with open(self.output / "training_log.txt", "a") as f:
            f.write(stamped + "\n")
        if self.show_progress:
            tqdm.write(stamped)
