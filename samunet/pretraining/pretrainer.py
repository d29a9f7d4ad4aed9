"""Self-supervised continued pretraining of an image encoder: the shared loop (trainers/epoch_loop.py)
with unlabelled slices in and a masked-image-modelling loss out (pretraining/objectives).

What trains: the whole encoder (`full`), or LoRA / adapters inside it (the modules fine-tuning uses),
plus the objective's own small head. Batch norm layers keep their running statistics: masked inputs
would otherwise shift them away from what unmasked images produce in fine-tuning. After every epoch the
masked loss on a fixed set of slices with fixed masks (`monitor_loss`) is logged beside the training
loss, and `checkpoint_latest.pth` is written (trainable tensors, optimiser, schedule, log), so `--c`
continues with the losses an uninterrupted run would have had. At the end: encoder.pth + encoder.json
(models/pretrained_encoder.py) and reconstruction pictures.
"""
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from samunet import __version__
from samunet.errors import SamunetError
from samunet.models.adapters import add_encoder_adapters
from samunet.models.backbone_registry import BACKBONES, NORMALIZATIONS, normalization_from_fields
from samunet.models.backbones import build_backbone
from samunet.models.build import ENCODER_LORA_TARGETS
from samunet.models.input_mapping import InputMapper
from samunet.models.lora import add_lora, merge_lora
from samunet.models.pretrained_encoder import save_pretrained_encoder
from samunet.models.torch_files import load_torch, save_torch
from samunet.planners.plan_file import PlanView
from samunet.pretraining.masking import random_patch_masks
from samunet.pretraining.objectives import build_objective
from samunet.pretraining.pictures import write_reconstructions
from samunet.trainers.epoch_loop import EpochLoop
from samunet.trainers.progress import plot_curves
from samunet.trainers.slice_dataset import SliceDataset
from samunet.trainers.slice_sampler import SliceSampler, SliceSpec

FORMAT = "samunet-pretraining-1"
TUNE_MODES = ("full", "lora", "adapter")
PICTURES = 4
# what must match for --c to continue a run
RESUME_KEYS = ("backbone", "tune", "mask_ratio", "batch_size", "lora_rank", "lora_alpha", "adapter_ratio", "seed")


@dataclass
class PretrainConfig:
    backbone: str
    tune: str = "full"
    mask_ratio: float = None  # None: the objective's own default
    epochs: int = 50
    iters_per_epoch: int = 50
    batch_size: int = None  # None: the plan's, for this backbone and the device's kind
    lr: float = None  # None: 1e-4 for the whole encoder, 5e-4 for LoRA / adapters
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    grad_clip: float = 5.0
    amp: str = "off"
    seed: int = 12345
    time_budget_minutes: float = None
    lora_rank: int = 4
    lora_alpha: float = 4.0
    adapter_ratio: float = 0.25
    monitor_slices: int = 32
    input_normalization: str = None  # a name in NORMALIZATIONS; None: the plan's backbone entry

    def learning_rate(self):
        if self.lr is not None:
            return self.lr
        return 1e-4 if self.tune == "full" else 5e-4


class Pretrainer(EpochLoop):
    def __init__(self, config, plan, images, output_folder, device, dist_info, base_checkpoint=None,
                 show_progress=True):
        self.start_clock()
        if config.tune not in TUNE_MODES:
            raise SamunetError(f"--tune {config.tune}: choose one of {', '.join(TUNE_MODES)}")
        self.cfg, self.device, self.dist = config, device, dist_info
        self.output = Path(output_folder)
        self.show_progress = show_progress and dist_info.is_main
        self.images = images
        view = PlanView(plan)
        backbone_plan = view.backbone(config.backbone)
        self.batch_size = config.batch_size or view.batch_size(config.backbone, device.type)
        if self.batch_size % dist_info.world_size:
            raise SamunetError(f"batch size {self.batch_size} does not split over {dist_info.world_size} processes")
        self.parts = build_backbone(config.backbone, backbone_plan["input_size"], base_checkpoint)
        with torch.random.fork_rng(devices=[]):  # new parameters are the same in every run of this seed
            torch.manual_seed(config.seed)
            encoder = self.parts.image_encoder
            if config.tune == "lora":
                add_lora(encoder, ENCODER_LORA_TARGETS, config.lora_rank, config.lora_alpha, 0.0)
            elif config.tune == "adapter":
                add_encoder_adapters(encoder, config.adapter_ratio)
            self.objective = build_objective(config.backbone, encoder, self.parts.input_size)
        self.mask_ratio = config.mask_ratio or self.objective.default_mask_ratio
        self._select_trainable()
        self.objective.to(device)
        # fed as fine-tuning feeds it: the plan's normalisation for this backbone (recorded in encoder.json)
        self.normalization = (NORMALIZATIONS[config.input_normalization] if config.input_normalization
                              else normalization_from_fields(view.normalization_fields(config.backbone)))
        self.mapper = InputMapper(view.windows, view.encoder_input, self.normalization.input_range,
                                  self.parts.input_size, device)
        self.pixel_mean = torch.tensor(self.normalization.pixel_mean, device=device).view(1, 3, 1, 1)
        self.pixel_std = torch.tensor(self.normalization.pixel_std, device=device).view(1, 3, 1, 1)
        self.slices = SliceDataset(images.data_folder, self.mapper.encoder_input, augment=False)
        self.sampler = SliceSampler(images.data_folder, images.case_ids, seed=config.seed, oversample=0)
        self.monitor_specs = self._monitor_specs(config.monitor_slices)
        self.set_up_optimization(self.objective, config.learning_rate())
        self.log = {"train_loss": [], "monitor_loss": [], "lr": [], "epoch_seconds": [], "iterations": []}

    def _select_trainable(self):
        tune, unused = self.cfg.tune, self.objective.unused_encoder_parts
        for name, param in self.objective.named_parameters():
            if not name.startswith("encoder."):
                param.requires_grad_(True)  # the objective's own head and mask token
                continue
            relative = name[len("encoder."):]
            chosen = (tune == "full" or (tune == "lora" and ".lora_" in name)
                      or (tune == "adapter" and ".adapter." in name))
            param.requires_grad_(chosen and not relative.startswith(unused))

    def _monitor_specs(self, count):
        """A fixed spread of slices over the cases (the same in every run on the same images)."""
        every = [(c, s) for c in self.sampler.case_ids for s in range(self.sampler.num_slices[c])]
        picks = np.linspace(0, len(every) - 1, num=min(count, len(every))).round().astype(int)
        return [SliceSpec(*every[i], 0) for i in sorted(set(picks.tolist()))]

    # --- inputs --------------------------------------------------------------------------------
    def normalised_images(self, specs, slices=None):
        """(B, 3, S, S) encoder inputs of the slices, as fine-tuning feeds them (pixel mean / std applied);
        (B * C, 3, S, S) when the plan encodes the C channels separately (each an image of its own)."""
        source = self.slices if slices is None else slices
        x = self.mapper.images([source[s][0] for s in specs])
        if x.dim() == 5:
            x = x.flatten(0, 1)
        return (x - self.pixel_mean) / self.pixel_std

    def epoch_batches(self, epoch):
        return self.rank_share(self.sampler.epoch_batches(epoch, self.cfg.iters_per_epoch, self.batch_size))

    def epoch_inputs(self, batches):
        for specs in batches:
            images = self.normalised_images(specs)
            masks = random_patch_masks(len(images), self.objective.grid, self.mask_ratio)  # seeded per epoch
            yield images, masks.to(self.device)

    # --- the loop's hooks ----------------------------------------------------------------------
    def set_train_mode(self):
        self.objective.train()
        for module in self.objective.modules():
            if isinstance(module, _BatchNorm):
                module.eval()

    def compute_loss(self, images, masks):
        with self.autocast():
            return self.network(images, masks)

    @torch.no_grad()
    def reconstruction_loss(self, specs, slices=None, seed=0):
        """Mean masked loss over `specs` (of this run's images, or of `slices`, a SliceDataset of other
        images) with masks drawn from `seed`: comparable between runs and before / after training."""
        self.objective.eval()
        generator = torch.Generator().manual_seed(seed)
        total = 0.0
        for start in range(0, len(specs), self.batch_size):
            batch = specs[start : start + self.batch_size]
            images = self.normalised_images(batch, slices)
            masks = random_patch_masks(len(images), self.objective.grid, self.mask_ratio, generator)
            with self.autocast():
                loss = self.objective(images, masks.to(self.device))
            total += loss.item() * len(batch)
        return total / max(1, len(specs))

    def end_epoch(self, epoch, losses, seconds):
        monitor = self.reconstruction_loss(self.monitor_specs)
        self.log["train_loss"].append(float(np.mean(losses)))
        self.log["monitor_loss"].append(monitor)
        self.log["lr"].append(self.optimizer.param_groups[0]["lr"])
        self.log["epoch_seconds"].append(seconds)
        self.log["iterations"].append(len(losses))
        self.write_log(f"epoch {epoch}: masked reconstruction loss {np.mean(losses):.4f} (training), "
                       f"{monitor:.4f} (fixed slices and masks), lr {self.log['lr'][-1]:.2e}, {seconds:.1f} s")
        self.start_epoch = epoch + 1
        self.save(self.output / "checkpoint_latest.pth")
        plot_curves([({"training loss": self.log["train_loss"], "loss on fixed slices and masks":
                       self.log["monitor_loss"]}, None), ({"learning rate": self.log["lr"]}, None)],
                    self.output / "progress.png")

    def finish(self):
        encoder = self.objective.encoder
        pictures = self.write_pictures()
        merge_lora(encoder)  # LoRA into the weights: encoder.pth has the backbone's own keys
        description = {
            "samunet_version": __version__,
            "backbone": self.cfg.backbone,
            "base_weights": self.parts.base_weights,
            "input_size": self.parts.input_size,
            "input_normalization": self.normalization.fields(),
            "objective": BACKBONES[self.cfg.backbone].pretraining_objective,
            "mask_ratio": self.mask_ratio,
            "tune": self.cfg.tune,
            "adapter_ratio": self.cfg.adapter_ratio,
            "lora_rank": self.cfg.lora_rank,
            "data": {"cases": len(self.images.case_ids), "case_list_sha256": self.images.case_list_sha256(),
                     "sources": self.images.counts, "preprocessed": self.images.data_folder.name},
            "epochs": len(self.log["train_loss"]),
            "steps": sum(self.log["iterations"]),
            "final_loss": self.log["train_loss"][-1] if self.log["train_loss"] else None,
            "final_monitor_loss": self.log["monitor_loss"][-1] if self.log["monitor_loss"] else None,
            "reconstructions": [p.name for p in pictures],
        }
        description = save_pretrained_encoder(self.output, encoder, description)
        (self.output / "checkpoint_latest.pth").unlink(missing_ok=True)
        self.write_log(f"pretrained encoder -> {self.output / 'encoder.pth'} (sha256 {description['sha256'][:16]}...)")
        return description

    def write_pictures(self):
        specs = self.monitor_specs[:: max(1, len(self.monitor_specs) // PICTURES)][:PICTURES]
        images = self.normalised_images(specs)[:: self.mapper.views]  # each slice's first channel
        masks = random_patch_masks(len(specs), self.objective.grid, self.mask_ratio, torch.Generator().manual_seed(0))
        self.objective.eval()
        reconstructed = self.objective.reconstruct(images, masks.to(self.device))
        lo, hi = self.normalization.input_range

        def shown(x):  # first channel, back in [0, 1]
            return ((x * self.pixel_std + self.pixel_mean)[:, 0].float().cpu().numpy() - lo) / (hi - lo)

        cell = self.parts.input_size // self.objective.grid
        hidden = masks.repeat_interleave(cell, 1).repeat_interleave(cell, 2).numpy()
        original = shown(images)
        return write_reconstructions(original.clip(0, 1), np.where(hidden, 0.5, original).clip(0, 1),
                                     shown(reconstructed).clip(0, 1), self.output / "reconstructions",
                                     [f"{s.case_id}_slice{s.slice_index}" for s in specs])

    # --- checkpoints ---------------------------------------------------------------------------
    def save(self, path):
        trainable = {n: p.detach().cpu().clone() for n, p in self.objective.named_parameters() if p.requires_grad}
        save_torch({"format": FORMAT, "config": asdict(self.cfg), "batch_size": self.batch_size,
                    "mask_ratio": self.mask_ratio, "case_list_sha256": self.images.case_list_sha256(),
                    "trainable": trainable, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "grad_scaler": self.scaler.state_dict(),
                    "epoch": self.start_epoch, "log": self.log, "saved": time.strftime("%Y-%m-%d %H:%M:%S")}, path)

    def load(self, path):
        payload = load_torch(path, "a samunet_pretrain checkpoint")
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise SamunetError(f"{path}: not a samunet_pretrain checkpoint (format {FORMAT} expected)")
        saved = dict(payload["config"], batch_size=payload["batch_size"], mask_ratio=payload["mask_ratio"])
        now = dict(asdict(self.cfg), batch_size=self.batch_size, mask_ratio=self.mask_ratio)
        changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in RESUME_KEYS if saved.get(k) != now[k]]
        if payload["case_list_sha256"] != self.images.case_list_sha256():
            changed.append("the set of images")
        if changed:
            raise SamunetError(f"{path}: made with other settings ({'; '.join(changed)}); continue with the "
                               "original ones or pretrain under another --name")
        params = {n: p for n, p in self.objective.named_parameters() if p.requires_grad}
        if set(params) != set(payload["trainable"]):
            raise SamunetError(f"{path}: its trainable tensors do not match this pretraining run")
        with torch.no_grad():
            for name, tensor in payload["trainable"].items():
                params[name].copy_(tensor)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["grad_scaler"])
        self.start_epoch = payload["epoch"]
        self.log = payload["log"]
