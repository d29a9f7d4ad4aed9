"""Medical SAM weights files (MedSAM, SAM-Med2D, any SAM-format ViT with --input-normalization): built from
randomly initialised files written in each project's layout (key names and shapes as the released ones),
refused when the file is another variant, and fed the input normalisation their authors trained with."""
import pytest
import torch

from samunet.errors import SamunetError
from samunet.models.backbone_registry import NORMALIZATIONS
from samunet.models.backbones import build_architecture, build_backbone
from samunet.models.build import build_model
from samunet.models.input_mapping import EncoderInput, InputMapper
from samunet.models.sam_med2d_adapter import to_file_keys
from samunet.models.strategies_cli import main as samunet_strategies
from samunet.models.weights import sha256_of

SMALL = 256  # the ViT-B files are loaded at 256 (position tables resized) to keep the tests quick


def _write_sam_file(parts, path, encoder_keys=lambda s: s, wrap=None):
    """A SAM-layout state dict in half precision (half the bytes; loading casts)."""
    state = {f"image_encoder.{k}": v.half() for k, v in encoder_keys(parts.image_encoder.state_dict()).items()}
    state.update({f"prompt_encoder.{k}": v for k, v in parts.prompt_encoder.state_dict().items()})
    state.update({f"mask_decoder.{k}": v for k, v in parts.mask_decoder.state_dict().items()})
    torch.save({wrap: state} if wrap else state, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    medsam = build_architecture("medsam")  # ViT-B at 1024, as medsam_vit_b.pth
    assert medsam.image_encoder.pos_embed.shape == (1, 64, 64, 768)
    _write_sam_file(medsam, folder / "medsam_vit_b.pth")
    del medsam
    sam_med2d = build_architecture("sam_med2d")  # ViT-B at 256 with an adapter in every block
    # SAM-Med2D's names: blocks.N.Adapter.{channel,spatial,norm}; its file holds the model under "model"
    adapter = to_file_keys(sam_med2d.image_encoder.state_dict())
    assert adapter["blocks.0.Adapter.spatial.0.weight"].shape == (768, 768, 3, 3)
    assert adapter["blocks.0.Adapter.channel.0.weight"].shape == (192, 768)
    _write_sam_file(sam_med2d, folder / "sam-med2d_b.pth", to_file_keys, wrap="model")
    return folder


def _encoder_input(model, image01):
    """What the encoder's first layer receives for a slice whose windowed values are `image01` (in [0, 1])."""
    seen = []
    handle = model.encoder.patch_embed.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    mapper = InputMapper([[0.0, 1.0]], EncoderInput.default(1), model.metadata["input_range"], model.input_size, "cpu")
    with torch.no_grad():
        model.encode(mapper.images([image01[None].numpy()]))
    handle.remove()
    return seen[0]


def test_medsam_file_is_fed_unit_images(files):
    model = build_model("medsam", "decoder", 2, input_size=SMALL, checkpoint=files / "medsam_vit_b.pth")
    assert model.metadata["base_weights"] == sha256_of(files / "medsam_vit_b.pth")
    image = torch.linspace(0, 1, SMALL * SMALL).reshape(SMALL, SMALL)
    # MedSAM: [0, 1] images as they are, no pixel mean / std
    assert torch.allclose(_encoder_input(model, image)[0], image.expand(3, -1, -1), atol=1e-6)
    # the generic route: the same file as a plain ViT-B (SAM's normalisation by default) told it is [0, 1]
    unit = build_model("vit_b", "decoder", 2, input_size=SMALL, checkpoint=files / "medsam_vit_b.pth",
                       normalization=NORMALIZATIONS["unit"].fields())
    assert torch.allclose(_encoder_input(unit, image)[0], image.expand(3, -1, -1), atol=1e-6)


def test_sam_med2d_file_loads_its_adapters_and_sam_normalisation(files):
    path = files / "sam-med2d_b.pth"
    parts = build_backbone("sam_med2d", checkpoint=path)
    assert parts.input_size == 256 and parts.weights_variant == "sam_med2d"
    saved = torch.load(path, weights_only=True)["model"]
    block = parts.image_encoder.blocks[3]
    assert torch.equal(block.mlp.adapter.spatial[2].weight, saved["image_encoder.blocks.3.Adapter.spatial.2.weight"].float())
    assert torch.equal(block.mlp.mlp.lin1.weight, saved["image_encoder.blocks.3.mlp.lin1.weight"].float())
    # the adapter takes part: the block's MLP path is mlp(x) + adapter(x)
    x = torch.randn(1, 16, 16, 768)
    with torch.no_grad():
        assert torch.allclose(block.mlp(x), block.mlp.mlp(x) + block.mlp.adapter(x))
        assert not torch.allclose(block.mlp(x), block.mlp.mlp(x))
    model = build_model("sam_med2d", "decoder", 1, checkpoint=path)
    image = torch.rand(256, 256)
    sam = NORMALIZATIONS["sam"]
    expected = (image * 255 - torch.tensor(sam.pixel_mean).view(3, 1, 1)) / torch.tensor(sam.pixel_std).view(3, 1, 1)
    assert torch.allclose(_encoder_input(model, image)[0], expected, atol=1e-4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(".adapter." in n for n in trainable)  # its adapters are part of the frozen encoder here


def test_a_file_of_another_variant_is_refused_in_one_line(files):
    with pytest.raises(SamunetError, match=r"sam-med2d_b.pth: this is a SAM-Med2D file \(ViT-B with its encoder "
                                           r"adapters\), not what backbone medsam takes \(a ViT-B file\)"):
        build_backbone("medsam", checkpoint=files / "sam-med2d_b.pth")
    with pytest.raises(SamunetError, match=r"medsam_vit_b.pth: this is a ViT-B file, not what backbone sam_med2d"):
        build_backbone("sam_med2d", checkpoint=files / "medsam_vit_b.pth")
    with pytest.raises(SamunetError, match=r"this is a ViT-B file, not what backbone vit_l takes"):
        build_backbone("vit_l", checkpoint=files / "medsam_vit_b.pth")
    with pytest.raises(SamunetError, match="this is a ViT-B file, not what backbone litemedsam takes"):
        build_backbone("litemedsam", checkpoint=files / "medsam_vit_b.pth")


def test_strategies_command_checks_a_weights_file(files, capsys):
    samunet_strategies(["-b", "medsam", "--checkpoint", str(files / "medsam_vit_b.pth")])
    out = capsys.readouterr().out
    assert "a ViT-B file, loads as backbone medsam" in out
    assert f"sha256 {sha256_of(files / 'medsam_vit_b.pth')}" in out
    assert "input normalisation (medsam's default) unit: images scaled to [0, 1], no pixel mean/std" in out
    samunet_strategies(["-b", "vit_b", "--checkpoint", str(files / "medsam_vit_b.pth"), "--input-normalization", "unit"])
    assert "input normalisation (--input-normalization) unit" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        samunet_strategies(["-b", "sam_med2d", "--checkpoint", str(files / "medsam_vit_b.pth")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "this is a ViT-B file, not what backbone sam_med2d takes" in err.splitlines()[-1]
