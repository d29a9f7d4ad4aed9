"""Fine-tuning: the shared loop (trainers/epoch_loop.py) with slices in and segmentation losses out.

What a run trains on is read and checked first (trainers/fold_data.py); where the model's input comes from
(images through the whole model, a frozen encoder's outputs computed as drawn, or read from the embedding
cache) is the run's input source (trainers/encoder_inputs.py), chosen by the strategy. Strategies
themselves are declarations (samunet/models/strategies.py), not trainers. The final 3D validation is not
the trainer's: samunet_train runs it after training (samunet/fold_validation.py).
"""
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from samunet.errors import SamunetError
from samunet.file_io import copy_file
from samunet.layout import PLANS_FILE
from samunet.models.backbone_registry import NORMALIZATIONS
from samunet.models.build import FUSED_SLICES_KEY, PeftConfig, build_model
from samunet.models.checkpoint import load_trainable, read_checkpoint, save_checkpoint
from samunet.models.input_mapping import InputMapper
from samunet.models.mirroring_record import MIRRORING_RECORD
from samunet.models.strategies import get_strategy
from samunet.planners.plan_file import PlanView
from samunet.prompts.derivation import PromptRule, prompts_from_labels
from samunet.prompts.tensors import class_probabilities, in_prompt_order, prompt_groups
from samunet.trainers.encoder_inputs import encoder_inputs_for
from samunet.trainers.epoch_loop import EpochLoop
from samunet.trainers.fold_data import read_fold_data
from samunet.trainers.loss import ce_dice_loss, mask_dice_bce_loss
from samunet.trainers.progress import plot_progress
from samunet.trainers.slice_sampler import SliceSampler, validation_slices

EMA_MOMENTUM = 0.9  # nnU-Net's moving average of the pseudo Dice
EPOCH_LENGTH = (25, 250)  # bounds of the default iterations per epoch (250: nnU-Net's fixed epoch)


def iterations_per_epoch(num_slices, batch_size):
    """The default epoch: one pass over the training slices, within EPOCH_LENGTH, so that per-epoch
    validation and the LR schedule's epochs mean about the same on 1 case and on 200."""
    low, high = EPOCH_LENGTH
    return int(min(high, max(low, -(-num_slices // batch_size))))


@dataclass
class TrainConfig:
    strategy: str
    backbone: str
    fold: str
    epochs: int = 50
    iters_per_epoch: int = None  # None: iterations_per_epoch() of the training slices
    batch_size: int = None  # None: the plan's, for this backbone and the device's kind (cpu_batch_size on a CPU)
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
    time_budget_minutes: float = None  # end the LR decay at the last iteration that fits this wall time; stop there
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


class SamTrainer(EpochLoop):
    def __init__(self, config, preprocessed_folder, output_folder, device, dist_info, base_checkpoint=None,
                 show_progress=True, pretrained_encoder=None, input_source=None):
        """`input_source`: a class of trainers/encoder_inputs.py; default the strategy's (and use_cache's)."""
        self.start_clock()  # the time budget counts from here: building, caching, epochs
        self.cfg, self.device, self.dist = config, device, dist_info
        self.preprocessed = Path(preprocessed_folder)
        self.output = Path(output_folder)
        self.show_progress = show_progress and dist_info.is_main
        data = self.fold_data = read_fold_data(config, self.preprocessed)
        self.plan, self.dataset_json, self.data_folder = data.plan, data.dataset_json, data.data_folder
        self.train_cases, self.val_cases, self.synthetic = data.train_cases, data.val_cases, data.synthetic
        plan = PlanView(self.plan, self.preprocessed / PLANS_FILE)
        backbone_plan = plan.backbone(config.backbone)
        self.batch_size = config.batch_size or plan.batch_size(config.backbone, device.type)
        if self.batch_size % dist_info.world_size:
            raise SamunetError(f"batch size {self.batch_size} does not split over {dist_info.world_size} processes")
        class_names = plan.class_names
        peft = PeftConfig(config.lora_rank, config.lora_alpha, config.lora_dropout, config.adapter_ratio)
        self.prompt_rule = config.prompt_rule()
        self.model = build_model(config.backbone, config.strategy, len(class_names),
                                 input_size=backbone_plan["input_size"], checkpoint=base_checkpoint,
                                 class_names=class_names, peft=peft, pretrained_encoder=pretrained_encoder,
                                 prompts=asdict(self.prompt_rule) if self.prompt_rule else None,
                                 normalization=self.input_normalization(plan),
                                 fused_slices=plan.fused_slices, channel_views=plan.channel_views).to(device)
        if self.synthetic is not None:
            self.model.metadata["synthesis"] = {
                "method": config.synthesis, "num_exemplars": len(self.train_cases),
                "synthetic_cases": len(self.synthetic.case_ids), "synthetic_fraction": config.synthetic_fraction,
                "set": self.synthetic.folder.name}
        # the model's metadata, not the plan, from here on: cache keys and prediction read it too
        self.mapper = InputMapper(plan.windows, plan.encoder_input, self.model.metadata["input_range"],
                                  self.model.input_size, device, self.model.metadata[FUSED_SLICES_KEY])
        self.inputs = (input_source or encoder_inputs_for(config.strategy, config.use_cache))(self)
        self.model.metadata[MIRRORING_RECORD] = self.inputs.mirroring_axes()  # prediction mirrors along these only
        self.sampler = SliceSampler(self.data_folder, self.train_cases, seed=config.seed, synthetic=self.synthetic,
                                    synthetic_fraction=config.synthetic_fraction)
        iterations = config.iters_per_epoch or iterations_per_epoch(
            sum(self.sampler.num_slices[c] for c in self.train_cases), self.batch_size)
        self.cfg = config = replace(config, batch_size=self.batch_size, iters_per_epoch=iterations)
        # what this run used, in the checkpoint's readable JSON too
        self.model.metadata["training"] = {"device": device.type, "batch_size": self.batch_size,
                                           "iterations_per_epoch": iterations}
        # a batch without foreground has no prompts: DDP must then not wait for the prompt token's gradient
        self.find_unused_parameters = self.prompt_rule is not None
        self.set_up_optimization(self.inputs.trained_module(), config.learning_rate())
        self.val_specs = validation_slices(self.data_folder, self.val_cases, config.val_slices)
        self.log = {"train_loss": [], "pseudo_dice": [], "ema_dice": [], "lr": [], "epoch_seconds": []}
        self.best_ema = -1.0

    def input_normalization(self, plan):
        if self.cfg.input_normalization:
            return NORMALIZATIONS[self.cfg.input_normalization].fields()
        return plan.normalization_fields(self.cfg.backbone)

    def other_folders(self):
        return self.fold_data.other_folders()

    def trained_module(self):
        return self.inputs.trained_module()

    def plain_inputs(self, specs):
        """(inputs, targets) of the slices without augmentation, as the model's trained module takes them."""
        return self.inputs.plain_inputs(specs)

    # --- the loop's hooks (trainers/epoch_loop.py) --------------------------------------------------
    def epoch_batches(self, epoch):
        return self.rank_share(self.sampler.epoch_batches(epoch, self.cfg.iters_per_epoch, self.batch_size))

    def epoch_inputs(self, batches):
        return self.inputs.epoch_inputs(batches)

    def prepare(self):
        self.prepared = True
        self.inputs.prepare()

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
        # An epoch the budget ran out in is not evaluated: that would overrun the budget by the validation
        # slices' encoder passes (slow when training uncached). A last epoch the fitted decay ended early is:
        # its evaluation was budgeted.
        dice = None if self.cut_short else self.evaluate(self.val_specs)
        ema = self.log_epoch(epoch, losses, dice, seconds)
        self.save_epoch_checkpoints(epoch, ema)
        plot_progress(self.log, self.output / "progress.png")

    def finish(self):
        self.save("checkpoint_final.pth")
        (self.output / "checkpoint_latest.pth").unlink(missing_ok=True)
        (self.output / "checkpoint_latest.json").unlink(missing_ok=True)

    @torch.no_grad()
    def evaluate(self, specs):
        """Per-class Dice over the given slices at input size (pseudo Dice): {class value: dice}."""
        self.model.eval()
        k = self.model.num_outputs
        tp, fp, fn = np.zeros(k), np.zeros(k), np.zeros(k)
        for start in range(0, len(specs), self.batch_size):
            inputs, targets = self.plain_inputs(specs[start : start + self.batch_size])
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
                return self.trained_module()(inputs).argmax(1)
        prompts = prompts_from_labels(targets.cpu().numpy(), self.prompt_rule)
        groups = prompt_groups(prompts, targets.device)
        with self.autocast():
            _, mask_logits = self.trained_module()(inputs, groups)
        masks = [m.float().sigmoid() for m in in_prompt_order(groups, mask_logits)]
        return class_probabilities(prompts, masks, self.model.num_outputs, targets.shape, targets.device).argmax(1)

    def log_epoch(self, epoch, losses, dice, seconds):
        """Append the epoch to the log (and training_log.txt); returns the EMA pseudo Dice. dice None: not
        evaluated, the last pseudo Dice stands."""
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
        return ema

    def save_epoch_checkpoints(self, epoch, ema):
        """checkpoint_latest (resumes at the next epoch), and checkpoint_best when the EMA improved."""
        self.start_epoch = epoch + 1
        self.save("checkpoint_latest.pth")
        if ema > self.best_ema:
            self.best_ema = ema
            self.save("checkpoint_best.pth")

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


def copy_run_description(preprocessed_folder, configuration_folder):
    """The plan and dataset.json beside the trained folds, so prediction needs nothing else."""
    for name in (PLANS_FILE, "dataset.json"):
        copy_file(Path(preprocessed_folder) / name, configuration_folder / name)
