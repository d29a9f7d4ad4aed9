"""Where a training batch's input to the model comes from: the one thing fine-tuning runs differ in.

- `ImageInputs`: augmented slices through the whole model (strategies that train the encoder: full
  fine-tuning, LoRA, adapters);
- `EncodedInputs`: a frozen encoder (an inference copy, models/inference_precision.py: the embeddings the
  cache would hold, and faster than the frozen fp32 encoder under autocast) encodes each augmented batch
  as it is drawn, and only the head trains (--no-cache);
- `CachedInputs`: a frozen encoder's embeddings, computed once per slice and read from disk each epoch
  (trainers/embedding_cache.py), with its neighbours' for a model that fuses them. The cache holds
  un-augmented slices, so training sees each slice as preprocessed, or with --cache-mirroring in one of
  its four mirrorings (each cached) drawn per slice. When filling the cache would take longer than what
  is left of --time-budget, the run trains as `EncodedInputs` instead.
Each gives the trainer (trainers/trainer.py) the module it optimises, the (inputs, targets) of a batch
with and without augmentation, and the mirroring axes training shows (recorded in the checkpoint).
"""
import copy
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from samunet.file_io import folder_lock
from samunet.models.amp import amp_dtype
from samunet.models.inference_precision import for_inference
from samunet.models.mirroring_record import MIRROR_AXES, MIRRORING_RECORD, mirror_combinations
from samunet.models.strategies import get_strategy
from samunet.trainers.distributed import barrier
from samunet.trainers.embedding_cache import EmbeddingCache, FillExceedsBudget
from samunet.trainers.slice_dataset import MappedCollate, SliceDataset, collate_slices


class DecodeOnly(nn.Module):
    """Makes `decode` the forward of the module DDP wraps, for training on embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, embeddings, prompt_groups=None):
        return self.model.decode(embeddings, prompt_groups)


class ImageInputs:
    def __init__(self, trainer):
        self.trainer = trainer

    def mirroring_axes(self):
        return list(MIRROR_AXES) if self.trainer.cfg.augment else []

    def trained_module(self):
        return self.trainer.model

    def prepare(self):
        """Before the first epoch (every rank)."""

    def epoch_inputs(self, batches):
        """Yield (inputs, targets) on the device for this rank's share of each global batch, augmented."""
        t = self.trainer
        dataset = SliceDataset(t.data_folder, t.mapper.encoder_input, augment=t.cfg.augment,
                               other_folders=t.other_folders(), fused_slices=t.mapper.fused_slices)
        in_workers = t.cfg.num_workers > 0 and t.device.type == "cpu"  # on a GPU, it resizes faster
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=t.cfg.num_workers,
                            collate_fn=MappedCollate(t.mapper) if in_workers else collate_slices)
        for images, labels in loader:
            yield (images, labels) if in_workers else (t.mapper.stacked_images(images), t.mapper.labels(labels))

    def plain_inputs(self, specs):
        """(inputs, targets) of the slices as preprocessed: validation."""
        mapper = self.trainer.mapper
        dataset = SliceDataset(self.trainer.data_folder, mapper.encoder_input, augment=False,
                               fused_slices=mapper.fused_slices)
        images, labels = collate_slices([dataset[s] for s in specs])
        return mapper.stacked_images(images), mapper.labels(labels)


class EncodedInputs(ImageInputs):
    def __init__(self, trainer):
        super().__init__(trainer)
        self.frozen = None  # the inference copy, built on first use (a cached run's other DDP ranks never need it)

    def trained_module(self):
        return DecodeOnly(self.trainer.model)

    def inference_copy(self):
        if self.frozen is None:
            self.frozen = for_inference(copy.deepcopy(self.trainer.model), amp_dtype(self.trainer.cfg.amp))
        return self.frozen

    @torch.no_grad()
    def encode(self, images):
        with self.trainer.autocast():
            return self.inference_copy().encode(images).float()

    def epoch_inputs(self, batches):
        for images, labels in super().epoch_inputs(batches):
            yield self.encode(images), labels

    def plain_inputs(self, specs):
        images, labels = super().plain_inputs(specs)
        return self.encode(images), labels


class CachedInputs(EncodedInputs):
    def __init__(self, trainer):
        super().__init__(trainer)
        self.cached = True  # False once the fill is found not to fit the time budget
        t = trainer
        self.cache = EmbeddingCache(t.preprocessed, t.data_folder, t.plan, t.model.metadata, t.cfg.amp,
                                    t.other_folders())
        self.label_source = SliceDataset(t.data_folder, t.mapper.encoder_input, augment=False, other_folders=t.other_folders())
        self.mirrors = mirror_combinations(self.mirroring_axes())
        self.fill_seconds = 0.0

    def mirroring_axes(self):
        if not self.cached:
            return super().mirroring_axes()
        cfg = self.trainer.cfg
        return list(MIRROR_AXES) if cfg.augment and cfg.cache_mirroring else []

    def prepare(self):
        t = self.trainer
        cached = torch.tensor([1])
        if t.dist.is_main:
            start = time.perf_counter()
            try:
                with folder_lock(t.preprocessed, "an embedding-cache fill"):
                    cases = sorted(set(t.train_cases + t.val_cases)) + list(t.other_folders())
                    encoded = self.cache.fill(cases, self.inference_copy(), t.mapper, t.autocast, t.batch_size,
                                              t.show_progress, self.mirrors,
                                              t.seconds_left if t.cfg.time_budget_minutes else None)
                if encoded:
                    t.write_log(f"embedding cache: encoded {encoded} slices in {time.perf_counter() - start:.1f} s "
                                f"-> {self.cache.folder}")
            except FillExceedsBudget as late:
                cached[0] = 0
                t.write_log(f"embedding cache: encoding {late.slices} slices would take ~{late.seconds / 60:.1f} min, "
                            f"more than the {max(0.0, t.seconds_left()) / 60:.1f} min left of the time budget: "
                            "training without the cache (each batch encoded as drawn, with augmentation)")
            self.fill_seconds = time.perf_counter() - start
        if t.dist.enabled:
            torch.distributed.broadcast(cached, src=0)
        self.cached = bool(cached.item())
        t.model.metadata[MIRRORING_RECORD] = self.mirroring_axes()
        if self.cached:
            self.frozen = None  # every epoch reads the cache; the encoder copy is no longer needed
        barrier(t.dist)

    def _labels(self, specs, mirrors):
        return self.trainer.mapper.labels([np.flip(self.label_source.label(s), m) for s, m in zip(specs, mirrors)])

    def mirror_of(self, spec):
        """The cached mirroring a training slice is shown in: from its augmentation seed (reproducible)."""
        return self.mirrors[spec.augmentation_seed % len(self.mirrors)]

    def epoch_inputs(self, batches):
        if not self.cached:
            yield from super().epoch_inputs(batches)
            return
        for specs in batches:
            mirrors = [self.mirror_of(s) for s in specs]
            yield self.embeddings(specs, mirrors), self._labels(specs, mirrors)

    def plain_inputs(self, specs):
        if not self.cached:
            return super().plain_inputs(specs)
        return self.embeddings(specs), self._labels(specs, [()] * len(specs))

    def embeddings(self, specs, mirrors=None):
        return self.cache.embeddings(specs, self.trainer.device, mirrors, self.trainer.mapper.fused_slices)


def encoder_inputs_for(strategy, use_cache):
    """The input source of a run: the strategy's encoder trains, or is frozen and cached (or not)."""
    if not get_strategy(strategy).encoder_frozen:
        return ImageInputs
    return CachedInputs if use_cache else EncodedInputs
