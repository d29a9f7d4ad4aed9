"""Fine-tuning: the shared loop (trainers/epoch_loop.py) with slices in and segmentation losses out.

`SamTrainer` feeds augmented slices through the whole model. For strategies whose encoder is frozen,
`FrozenEncoderTrainer` (--no-cache) encodes augmented slices with an inference copy of the encoder and
trains the head on its outputs, and `CachedEmbeddingTrainer` reads those outputs, computed once per
slice, from disk: the same loop with the input methods replaced. Strategies themselves are declarations
(samunet/models/strategies.py), not trainers.
"""
import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from samunet.errors import SamunetError
from samunet.file_io import copy_file, folder_lock, read_json, write_json
from samunet.models.backbone_registry import NORMALIZATIONS
from samunet.models.build import PeftConfig, build_model
from samunet.models.checkpoint import load_trainable, read_checkpoint, save_checkpoint
from samunet.models.inference_precision import for_inference
from samunet.models.strategies import get_strategy
from samunet.planners.experiment_planner import PLANS_FILE
from samunet.planners.plan_file import read_plan, read_splits
from samunet.planners.splits import SPLITS_FILE, fold_cases
from samunet.preprocessing.storage import case_files
from samunet.prompts.derivation import PromptRule, prompts_from_labels
from samunet.prompts.tensors import class_probabilities, in_prompt_order, prompt_groups
from samunet.synthesis.synthetic_set import read_synthetic_set
from samunet.trainers.amp import amp_dtype
from samunet.trainers.augmentation import MIRROR_AXES, MIRRORING_RECORD, mirror_combinations
from samunet.trainers.distributed import barrier
from samunet.trainers.embedding_cache import EmbeddingCache, FillExceedsBudget
from samunet.trainers.epoch_loop import EpochLoop
from samunet.trainers.input_mapping import InputMapper
from samunet.trainers.loss import ce_dice_loss, mask_dice_bce_loss
from samunet.trainers.progress import plot_progress
from samunet.trainers.slice_dataset import MappedCollate, SliceDataset, collate_slices
from samunet.trainers.slice_sampler import SliceSampler, validation_slices

EMA_MOMENTUM = 0.9  # nnU-Net's moving average of the pseudo Dice


@dataclass
class TrainConfig:
    strategy: str
    backbone: str
    fold: str
    epochs: int = 50
    iters_per_epoch: int = 250
    batch_size: int = None  # None: the plan's, for this backbone
    lr: float = None  # None: 1e-4 when the whole encoder trains, else 5e-4
    weight_decay: float = 0.01
    ce_weight: float = 0.2
    dice_weight: float = 0.8
    warmup_fraction: float = 0.05
    grad_clip: float = 12.0
    num_train_cases: int = None
    amp: str = "off"
    num_workers: int = 0
    use_cache: bool = True
    augment: bool = True
    cache_mirroring: bool = False  # cached training: also cache mirrored slices, train on them, mirror at inference
    val_slices: int = 100
    seed: int = 12345
    time_budget_minutes: float = None  # end the LR decay at the whole epochs that fit this wall time; stop there
    lora_rank: int = 4
    synthesis: str = None  # a synthesis method: also train on its synthetic set for these exemplars
    synthetic_fraction: float = 0.5  # share of training slices drawn from the synthetic set
    prompts: str = None  # prompted training: box, point or box+point (prompts/derivation.py)
    box_jitter: str = None  # pixels ("5") or share of the box ("10%"); None: MedSAM's 5 at 256, scaled
    negative_point_probability: float = 0.5
    lora_alpha: float = 4.0
    lora_dropout: float = 0.0
    adapter_ratio: float = 0.25
    input_normalization: str = None  # a name in NORMALIZATIONS; None: the plan's backbone entry

    def prompt_rule(self):
        if not self.prompts:
            return None
        return PromptRule(self.prompts, self.box_jitter, self.negative_point_probability)

    def learning_rate(self):
        if self.lr is not None:
            return self.lr
        return 1e-4 if get_strategy(self.strategy).encoder == "full" else 5e-4


class DecodeOnly(nn.Module):
    """Makes `decode` the forward of the module DDP wraps, for training on cached embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, embeddings, prompt_groups=None):
        return self.model.decode(embeddings, prompt_groups)


class SamTrainer(EpochLoop):
    def __init__(self, config, preprocessed_folder, output_folder, device, dist_info, base_checkpoint=None,
                 show_progress=True, pretrained_encoder=None):
        self.start_clock()  # the time budget counts from here: building, caching, epochs
        self.cfg, self.device, self.dist = config, device, dist_info
        self.preprocessed = Path(preprocessed_folder)
        self.output = Path(output_folder)
        self.show_progress = show_progress and dist_info.is_main
        self.plan = read_plan(self.preprocessed / PLANS_FILE)
        self.dataset_json = read_json(self.preprocessed / "dataset.json")
        self.data_folder = self.preprocessed / self.plan["data_identifier"]
        if not self.data_folder.is_dir():
            raise SamunetError(f"{self.data_folder}: not preprocessed yet; run samunet_preprocess first")
        if config.backbone not in self.plan["backbones"]:
            raise SamunetError(f"backbone {config.backbone} is not in {self.preprocessed / PLANS_FILE}")
        splits = read_splits(self.preprocessed / SPLITS_FILE)
        all_cases = sorted(p.stem for p in self.data_folder.glob("*.json"))
        self.train_cases, self.val_cases = fold_cases(splits, config.fold, all_cases, config.num_train_cases)
        self.synthetic = self._synthetic_set()
        missing = sorted(set(self.train_cases + self.val_cases) - set(all_cases))
        if missing:
            raise SamunetError(f"{self.data_folder}: cases of the split are not preprocessed: {', '.join(missing[:5])}")
        for case_id in sorted(set(self.train_cases + self.val_cases)):
            for path in case_files(self.data_folder, case_id):
                if not path.is_file():
                    raise SamunetError(f"{path}: missing; run samunet_preprocess again to redo the case")

        backbone_plan = self.plan["backbones"][config.backbone]
        self.batch_size = config.batch_size or backbone_plan["batch_size"]
        if self.batch_size % dist_info.world_size:
            raise SamunetError(f"batch size {self.batch_size} does not split over {dist_info.world_size} processes")
        class_names = [n for n, v in sorted(self.plan["labels"].items(), key=lambda kv: kv[1]) if v != 0]
        peft = PeftConfig(config.lora_rank, config.lora_alpha, config.lora_dropout, config.adapter_ratio)
        self.prompt_rule = config.prompt_rule()
        self.model = build_model(config.backbone, config.strategy, len(class_names),
                                 input_size=backbone_plan["input_size"], checkpoint=base_checkpoint,
                                 class_names=class_names, peft=peft, pretrained_encoder=pretrained_encoder,
                                 prompts=asdict(self.prompt_rule) if self.prompt_rule else None,
                                 normalization=self.input_normalization(backbone_plan)).to(device)
        self.model.metadata[MIRRORING_RECORD] = self.mirroring_axes()  # prediction mirrors along these only
        if self.synthetic is not None:
            self.model.metadata["synthesis"] = {
                "method": config.synthesis, "num_exemplars": len(self.train_cases),
                "synthetic_cases": len(self.synthetic.case_ids), "synthetic_fraction": config.synthetic_fraction,
                "set": self.synthetic.folder.name}
        # the model's metadata, not the plan, from here on: cache keys and prediction read it too
        self.mapper = InputMapper(self.plan["intensity_mapping"]["window_per_channel"],
                                  self.model.metadata["input_range"], self.model.input_size, device)
        self.sampler = SliceSampler(self.data_folder, self.train_cases, seed=config.seed, synthetic=self.synthetic,
                                    synthetic_fraction=config.synthetic_fraction)
        # a batch without foreground has no prompts: DDP must then not wait for the prompt token's gradient
        self.find_unused_parameters = self.prompt_rule is not None
        self.set_up_optimization(self._trained_module(), config.learning_rate())
        self.val_specs = validation_slices(self.data_folder, self.val_cases, config.val_slices)
        self.log = {"train_loss": [], "pseudo_dice": [], "ema_dice": [], "lr": [], "epoch_seconds": []}
        self.best_ema = -1.0

    def input_normalization(self, backbone_plan):
        if self.cfg.input_normalization:
            return NORMALIZATIONS[self.cfg.input_normalization].fields()
        return {key: backbone_plan[key] for key in ("input_range", "pixel_mean", "pixel_std")}

    def _synthetic_set(self):
        if not self.cfg.synthesis:
            return None
        return read_synthetic_set(self.preprocessed, self.plan, self.cfg.fold, self.cfg.num_train_cases,
                                  self.cfg.synthesis, self.train_cases)

    def other_folders(self):
        """Where cases outside the preprocessed folder live: the synthetic ones."""
        return {c: self.synthetic.folder for c in self.synthetic.case_ids} if self.synthetic else {}

    # --- the places where cached training differs -----------------------------------------------
    def mirroring_axes(self):
        """Slice axes that training shows mirrored, recorded in checkpoints (inference/mirroring.py)."""
        return list(MIRROR_AXES) if self.cfg.augment else []

    def _trained_module(self):
        return self.model

    def _epoch_inputs(self, batches):
        """Yield (inputs, targets) on the device for this rank's share of each global batch."""
        dataset = SliceDataset(self.data_folder, augment=self.cfg.augment, other_folders=self.other_folders())
        in_workers = self.cfg.num_workers > 0 and self.device.type == "cpu"  # on a GPU, it resizes faster
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=self.cfg.num_workers,
                            collate_fn=MappedCollate(self.mapper) if in_workers else collate_slices)
        for images, labels in loader:
            yield (images, labels) if in_workers else (self.mapper.images(images), self.mapper.labels(labels))

    def _plain_inputs(self, specs):
        """Inputs for validation: no augmentation."""
        dataset = SliceDataset(self.data_folder, augment=False)
        images, labels = collate_slices([dataset[s] for s in specs])
        return self.mapper.images(images), self.mapper.labels(labels)

    # --- the loop's hooks (trainers/epoch_loop.py) --------------------------------------------------
    def epoch_batches(self, epoch):
        return self._rank_share(self.sampler.epoch_batches(epoch, self.cfg.iters_per_epoch, self.batch_size))

    def set_train_mode(self):
        self.model.train()

    def compute_loss(self, inputs, targets):
        if self.prompt_rule is None:
            with self.autocast():
                logits = self.network(inputs)
            return ce_dice_loss(logits, targets, self.cfg.ce_weight, self.cfg.dice_weight)
        # Prompted: the class logits are trained as prompt-free training trains them (so the model still
        # segments without prompts, and `--prompts auto` has its first stage), and each prompt's mask with
        # MedSAM's Dice + BCE. Prompts are drawn from the (augmented) labels with torch's RNG, which the
        # loop seeds per epoch: a resumed run draws the same prompts.
        rng = np.random.default_rng(int(torch.randint(2**62, (1,)).item()))
        prompts = prompts_from_labels(targets.cpu().numpy(), self.prompt_rule, rng)
        groups = prompt_groups(prompts, targets.device)
        with self.autocast():
            logits, mask_logits = self.network(inputs, groups)
        loss = ce_dice_loss(logits, targets, self.cfg.ce_weight, self.cfg.dice_weight)
        for group, out in zip(groups, mask_logits):
            labels = torch.tensor([prompts[m].label for m in group.members], device=targets.device)
            masks = targets[group.slice_index] == labels.view(-1, 1, 1)
            loss = loss + mask_dice_bce_loss(out, masks) * len(group.members) / len(prompts)
        return loss

    def end_epoch(self, epoch, losses, seconds):
        # An epoch cut short by the time budget is not evaluated: that would overrun the budget
        # by the validation slices' encoder passes (slow when training uncached).
        dice = None if len(losses) < self.cfg.iters_per_epoch else self.evaluate(self.val_specs)
        self._record(epoch, losses, dice, seconds)

    def finish(self):
        self.save("checkpoint_final.pth")
        (self.output / "checkpoint_latest.pth").unlink(missing_ok=True)
        (self.output / "checkpoint_latest.json").unlink(missing_ok=True)
        self.write_validation_summary()

    @torch.no_grad()
    def evaluate(self, specs):
        """Per-class Dice over the given slices at input size (pseudo Dice): {class value: dice}."""
        self.model.eval()
        k = self.model.num_outputs
        tp, fp, fn = np.zeros(k), np.zeros(k), np.zeros(k)
        for start in range(0, len(specs), self.batch_size):
            inputs, targets = self._plain_inputs(specs[start : start + self.batch_size])
            pred = self._validation_prediction(inputs, targets)
            for c in range(1, k):
                p, t = pred == c, targets == c
                tp[c] += (p & t).sum().item()
                fp[c] += (p & ~t).sum().item()
                fn[c] += (~p & t).sum().item()
        denom = 2 * tp + fp + fn
        return {c: (2 * tp[c] / denom[c]) if denom[c] > 0 else float("nan") for c in range(1, k)}

    def _validation_prediction(self, inputs, targets):
        """(B, S, S) predicted labels; a prompted model is prompted with the labels' boxes / points as a mask
        gives them at prediction (prompts/derivation.py, no rng), as its final validation is too."""
        if self.prompt_rule is None:
            with self.autocast():
                return self._trained_module()(inputs).argmax(1)
        prompts = prompts_from_labels(targets.cpu().numpy(), self.prompt_rule)
        groups = prompt_groups(prompts, targets.device)
        with self.autocast():
            _, mask_logits = self._trained_module()(inputs, groups)
        masks = [m.float().sigmoid() for m in in_prompt_order(groups, mask_logits)]
        return class_probabilities(prompts, masks, self.model.num_outputs, targets.shape, targets.device).argmax(1)

    def _record(self, epoch, losses, dice, seconds):
        """Log an epoch and save its checkpoints. dice None: not evaluated, the last pseudo Dice stands."""
        if dice is None:
            mean_dice = self.log["pseudo_dice"][-1] if self.log["pseudo_dice"] else 0.0
        else:
            mean_dice = float(np.nanmean(list(dice.values()))) if dice else float("nan")
            mean_dice = 0.0 if np.isnan(mean_dice) else mean_dice
        previous = self.log["ema_dice"][-1] if self.log["ema_dice"] else mean_dice
        ema = EMA_MOMENTUM * previous + (1 - EMA_MOMENTUM) * mean_dice
        self.log["train_loss"].append(float(np.mean(losses)))
        self.log["pseudo_dice"].append(mean_dice)
        self.log["ema_dice"].append(ema)
        self.log["lr"].append(self.optimizer.param_groups[0]["lr"])
        self.log["epoch_seconds"].append(seconds)
        per_class = ("not evaluated: time budget spent" if dice is None else
                     ", ".join(f"{self.model.metadata['class_names'][c - 1]} {d:.4f}" for c, d in dice.items()))
        self.write_log(f"epoch {epoch}: train loss {np.mean(losses):.4f}, pseudo Dice [{per_class}], "
                       f"EMA {ema:.4f}, lr {self.log['lr'][-1]:.2e}, {seconds:.1f} s")
        self.start_epoch = epoch + 1
        self.save("checkpoint_latest.pth")
        if ema > self.best_ema:
            self.best_ema = ema
            self.save("checkpoint_best.pth")
        plot_progress(self.log, self.output / "progress.png")

    # --- checkpoints ---------------------------------------------------------------------------
    def training_state(self):
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "epoch": self.start_epoch,
            "log": self.log,
            "best_ema": self.best_ema,
            "config": asdict(self.cfg),
        }

    def save(self, name):
        save_checkpoint(self.output / name, self.model, extra=self.training_state())

    def load(self, path):
        payload = read_checkpoint(path)
        load_trainable(self.model, payload, path)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["grad_scaler"])
        self.start_epoch = payload["epoch"]
        self.log = payload["log"]
        self.best_ema = payload["best_ema"]
        # what the loaded model was trained with so far (none for checkpoints from before the record)
        self.model.metadata[MIRRORING_RECORD] = payload["metadata"].get(MIRRORING_RECORD, [])

    def write_validation_summary(self):
        """Predict the fold's validation cases in 3D as samunet_predict would (mirroring along the axes
        training mirrored; a prompted model prompted from the reference labels, as `--prompts <labels
        folder>` would), write them with their probabilities to validation/, and
        evaluate them against the reference labels in mm -> validation/summary.json."""
        # Imported here: the inference stage itself builds on trainers.input_mapping and trainers.amp.
        from samunet.evaluation.evaluate_cli import evaluate_folders
        from samunet.inference.predictor import SlicePredictor
        from samunet.inference.prompt_sources import MaskFolderPrompts
        from samunet.inference.prompted_predictor import PromptedPredictor
        from samunet.inference.write_prediction import restore_and_write
        from samunet.preprocessing.preprocess_dataset import GT_FOLDER
        from samunet.preprocessing.storage import load_case

        gt_folder = self.preprocessed / GT_FOLDER
        if not gt_folder.is_dir():
            raise SamunetError(f"{gt_folder}: missing; run samunet_preprocess again to create it")
        ending = self.dataset_json["file_ending"]
        # A copy: the predictor turns its models into inference models (models/inference_precision.py).
        cls = PromptedPredictor if self.prompt_rule else SlicePredictor
        predictor = cls([copy.deepcopy(self.model)], self.plan, self.dataset_json, self.device, self.cfg.amp,
                        self.batch_size)
        prompts = MaskFolderPrompts(gt_folder, ending, "ground_truth") if self.prompt_rule else None
        out = self.output / "validation"
        for case_id in tqdm(self.val_cases, desc="validation (3D)", disable=not self.show_progress, leave=False):
            data, _, properties = load_case(self.data_folder, case_id)
            if prompts is None:
                probs = predictor.predict_preprocessed(data)
            else:
                probs = predictor.predict_with_prompts(data, prompts.prompts(predictor, case_id, data, properties))
            restore_and_write(case_id, probs, properties, out, ending, save_probabilities=True)
        labels = sorted(v for v in self.plan["labels"].values() if v)
        summary = evaluate_folders(gt_folder, out, labels, num_processes=1, cases=[f"{c}{ending}" for c in self.val_cases],
                                   provenance=prompts.provenance if prompts else "none")
        summary["class_names"] = {str(v): n for n, v in self.plan["labels"].items() if v}
        summary["mirroring_axes"] = [] if prompts else predictor.mirroring_axes
        write_json(summary, out / "summary.json")
        self.write_log(f"validation (3D, {len(self.val_cases)} cases, prompts: {summary['prompt_provenance']}): mean "
                       f"foreground Dice {summary['foreground_mean']['Dice']:.4f}, HD95 "
                       f"{summary['foreground_mean']['HD95']:.2f} mm")
        return summary


class FrozenEncoderTrainer(SamTrainer):
    """Frozen encoder, no cache: augmented slices are encoded every iteration by an inference copy of
    the encoder (models/inference_precision.py: the embeddings the cache would hold, and faster than
    the frozen fp32 encoder under autocast: LiteMedSAM 0.057 against 0.068 s per slice at 96 x 96), and
    only the head is trained (and wrapped for DDP)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frozen = None  # the inference copy, built on first use (a cached run's other DDP ranks never need it)

    def _trained_module(self):
        return DecodeOnly(self.model)

    def _inference_copy(self):
        if self.frozen is None:
            self.frozen = for_inference(copy.deepcopy(self.model), amp_dtype(self.cfg.amp))
        return self.frozen

    @torch.no_grad()
    def _encode(self, images):
        with self.autocast():
            return self._inference_copy().encode(images).float()

    def _epoch_inputs(self, batches):
        for images, labels in super()._epoch_inputs(batches):
            yield self._encode(images), labels

    def _plain_inputs(self, specs):
        images, labels = super()._plain_inputs(specs)
        return self._encode(images), labels


class CachedEmbeddingTrainer(FrozenEncoderTrainer):
    """Frozen encoder: embeddings are computed once per slice and read from disk each epoch.

    The cache holds un-augmented slices, so training sees each slice as preprocessed, or with
    --cache-mirroring in one of its four mirrorings (each cached) drawn per slice; train with --no-cache
    to combine a frozen encoder with the whole image augmentation. When filling the cache would take
    longer than what is left of --time-budget, the run trains uncached instead (FrozenEncoderTrainer)."""

    def __init__(self, *args, **kwargs):
        self.cached = True  # False once the fill is found not to fit the time budget
        super().__init__(*args, **kwargs)
        self.cache = EmbeddingCache(self.preprocessed, self.data_folder, self.plan, self.model.metadata,
                                    self.cfg.amp, self.other_folders())
        self.label_source = SliceDataset(self.data_folder, augment=False, other_folders=self.other_folders())
        self.mirrors = mirror_combinations(self.mirroring_axes())
        self.fill_seconds = 0.0

    def mirroring_axes(self):
        if not self.cached:
            return super().mirroring_axes()
        return list(MIRROR_AXES) if self.cfg.augment and self.cfg.cache_mirroring else []

    def prepare(self):
        self.prepared = True
        cached = torch.tensor([1])
        if self.dist.is_main:
            start = time.perf_counter()
            try:
                with folder_lock(self.preprocessed, "an embedding-cache fill"):
                    cases = sorted(set(self.train_cases + self.val_cases)) + list(self.other_folders())
                    encoded = self.cache.fill(cases, self._inference_copy(), self.mapper, self.autocast,
                                              self.batch_size, self.show_progress, self.mirrors,
                                              self.seconds_left if self.cfg.time_budget_minutes else None)
                if encoded:
                    self.write_log(f"embedding cache: encoded {encoded} slices in {time.perf_counter() - start:.1f} s "
                                   f"-> {self.cache.folder}")
            except FillExceedsBudget as late:
                cached[0] = 0
                self.write_log(f"embedding cache: encoding {late.slices} slices would take ~{late.seconds / 60:.1f} min, "
                               f"more than the {max(0.0, self.seconds_left()) / 60:.1f} min left of the time budget: "
                               "training without the cache (each batch encoded as drawn, with augmentation)")
            self.fill_seconds = time.perf_counter() - start
        if self.dist.enabled:
            torch.distributed.broadcast(cached, src=0)
        self.cached = bool(cached.item())
        self.model.metadata[MIRRORING_RECORD] = self.mirroring_axes()
        if self.cached:
            self.frozen = None  # every epoch reads the cache; the encoder copy is no longer needed
        barrier(self.dist)

    def _labels(self, specs, mirrors):
        return self.mapper.labels([np.flip(self.label_source[s][1], m) for s, m in zip(specs, mirrors)])

    def _mirror(self, spec):
        """The cached mirroring a training slice is shown in: from its augmentation seed (reproducible)."""
        return self.mirrors[spec.augmentation_seed % len(self.mirrors)]

    def _epoch_inputs(self, batches):
        if not self.cached:
            yield from super()._epoch_inputs(batches)
            return
        for specs in batches:
            mirrors = [self._mirror(s) for s in specs]
            yield self.cache.embeddings(specs, self.device, mirrors), self._labels(specs, mirrors)

    def _plain_inputs(self, specs):
        if not self.cached:
            return super()._plain_inputs(specs)
        return self.cache.embeddings(specs, self.device), self._labels(specs, [()] * len(specs))


def trainer_class(strategy, use_cache):
    if not get_strategy(strategy).encoder_frozen:
        return SamTrainer
    return CachedEmbeddingTrainer if use_cache else FrozenEncoderTrainer


def copy_run_description(preprocessed_folder, configuration_folder):
    """The plan and dataset.json beside the trained folds, so prediction needs nothing else."""
    for name in (PLANS_FILE, "dataset.json"):
        copy_file(Path(preprocessed_folder) / name, configuration_folder / name)
