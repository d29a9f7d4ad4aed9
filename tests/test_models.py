import pytest
import torch
import torch.nn.functional as F

from samunet.errors import SamunetError
from samunet.models.backbones import build_backbone
from samunet.models.build import build_model, parameter_counts
from samunet.models.checkpoint import load_model, load_trainable, read_checkpoint, save_checkpoint
from samunet.models.strategies import STRATEGIES

SIZE = 64
K = 2


def tiny(strategy, **kwargs):
    return build_model("tiny", strategy, K, input_size=SIZE, **kwargs)


def train_steps(model, steps=2, seed=0):
    torch.manual_seed(seed)
    images = torch.rand(2, 3, SIZE, SIZE)
    target = torch.randint(0, K + 1, (2, SIZE, SIZE))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(images), target).backward()
        optimizer.step()
    return model


def check_declaration(strategy, name):
    """What the strategy's declaration says about one parameter name (independent of build.py's rule)."""
    if name.startswith("encoder."):
        mode, special = strategy.encoder, False
    else:
        if name.startswith("head.prompt_encoder.") or ".iou_prediction_head." in name:
            return False
        mode = strategy.decoder
        special = any(s in name for s in ("mask_tokens", "output_hypernetworks_mlps", "class_tokens"))
    return {
        "full": True,
        "frozen": False,
        "lora": "lora_" in name or special,
        "adapter": ".adapter." in name or special,
    }[mode]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_output_and_exactly_declared_parameters_change(name):
    strategy = STRATEGIES[name]
    model = tiny(name)
    assert model(torch.rand(3, 3, SIZE, SIZE)).shape == (3, K + 1, SIZE, SIZE)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    declared = {n for n in before if check_declaration(strategy, n)}
    assert trainable == declared
    assert changed == trainable  # and every other parameter is bit-identical
    assert parameter_counts(model)[0] == sum(before[n].numel() for n in declared)
    if strategy.encoder_frozen:
        assert not any(n.startswith("encoder.") for n in trainable)


@pytest.mark.parametrize("name", ["lora_both", "adapter_both", "lora_encoder", "adapter_decoder"])
def test_lora_and_adapters_start_as_the_base_model(name):
    x = torch.rand(2, 3, SIZE, SIZE)
    torch.testing.assert_close(tiny(name).eval()(x), tiny("full").eval()(x))


def test_decoding_pairs_each_image_with_its_own_prompt():
    model = tiny("decoder").eval()
    images = torch.rand(3, 3, SIZE, SIZE)
    together = model(images)
    alone = torch.cat([model(images[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    # prompted: prompt i is decoded with the embedding of the slice it names, whatever the others are
    from samunet.prompts.derivation import Prompt
    from samunet.prompts.tensors import prompt_groups

    model = tiny("decoder", prompts={"kind": "box"}).eval()
    boxes = [(4.0, 4.0, 40.0, 40.0), (10.0, 8.0, 60.0, 50.0), (0.0, 0.0, 63.0, 63.0)]
    prompts = [Prompt(2, 1, boxes[0]), Prompt(0, 1, boxes[1]), Prompt(2, 2, boxes[2])]
    class_logits, (masks,) = model(images, prompt_groups(prompts, "cpu"))
    assert masks.shape == (3, SIZE, SIZE)
    torch.testing.assert_close(class_logits, model(images), rtol=1e-4, atol=1e-5)
    _, (alone,) = model(images[2:3], prompt_groups([Prompt(0, 1, boxes[0])], "cpu"))
    torch.testing.assert_close(masks[0:1], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(masks[0], masks[2])  # another box on the same slice: another mask


def test_decoding_computes_what_segment_anything_computes():
    """Our channels-last decoding is a layout change only: for one image and its prompt it must give
    segment_anything's own `predict_masks` output, in values and gradients."""
    from samunet.models.decoding import decode_masks, encode_prompts

    parts = build_backbone("tiny", input_size=SIZE)
    decoder, prompts = parts.mask_decoder, parts.prompt_encoder
    emb = torch.randn(1, decoder.transformer_dim, *prompts.image_embedding_size, requires_grad=True)
    sparse, dense = encode_prompts(prompts, 1, boxes=torch.tensor([[4.0, 6.0, 40.0, 50.0]]))
    ours, ours_iou = decode_masks(decoder, emb, prompts.get_dense_pe(), sparse, dense)
    theirs, theirs_iou = decoder.predict_masks(emb, prompts.get_dense_pe(), sparse, dense)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_iou, theirs_iou, rtol=1e-5, atol=1e-5)
    weight = torch.randn_like(ours)
    ours_grad = torch.autograd.grad((ours * weight).sum(), [emb, *decoder.parameters()], allow_unused=True)
    theirs_grad = torch.autograd.grad((theirs * weight).sum(), [emb, *decoder.parameters()], allow_unused=True)
    for a, b in zip(ours_grad, theirs_grad):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lora_both", "adapter_encoder", "autosam", "cnn_head"])
def test_checkpoint_round_trip(tmp_path, name):
    model = train_steps(tiny(name, class_names=["core", "rim"]))
    path = tmp_path / "checkpoint_final.pth"
    save_checkpoint(path, model, extra={"epoch": 3})
    loaded, payload = load_model(path)
    x = torch.rand(2, 3, SIZE, SIZE)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    assert payload["epoch"] == 3
    assert set(payload["trainable"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    summary = __import__("json").loads(path.with_suffix(".json").read_text())
    assert summary["strategy"] == name and summary["class_names"] == ["core", "rim"]
    assert summary["base_weights"] == "random-seed-0"
    assert summary["trainable_parameters"] == parameter_counts(model)[0]


def test_loading_onto_another_backbone_or_strategy_fails_clearly(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, tiny("lora_both"))
    payload = read_checkpoint(path)
    with pytest.raises(SamunetError, match="made for strategy 'lora_both', not 'lora_decoder'"):
        load_trainable(tiny("lora_decoder"), payload, path)
    other = build_model("litemedsam", "lora_both", K)
    with pytest.raises(SamunetError, match="made for backbone 'tiny', not 'litemedsam'"):
        load_trainable(other, payload, path)
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(SamunetError, match="cannot be read as a samunet checkpoint"):
        load_model(tmp_path / "bad.pth")


def _sam_checkpoint(parts, path):
    state = {f"image_encoder.{k}": v for k, v in parts.image_encoder.state_dict().items()}
    state.update({f"prompt_encoder.{k}": v for k, v in parts.prompt_encoder.state_dict().items()})
    state.update({f"mask_decoder.{k}": v for k, v in parts.mask_decoder.state_dict().items()})
    torch.save(state, path)


def test_vit_input_size_resizing(tmp_path):
    torch.manual_seed(1)
    original = build_backbone("tiny", input_size=1024)
    with torch.no_grad():  # non-zero relative-position tables, so resizing them matters
        for block in original.image_encoder.blocks:
            block.attn.rel_pos_h.normal_()
            block.attn.rel_pos_w.normal_()
    path = tmp_path / "tiny_1024.pth"
    _sam_checkpoint(original, path)
    x = torch.rand(1, 3, 1024, 1024)
    native = build_backbone("tiny", checkpoint=path)
    assert native.input_size == 1024
    with torch.no_grad():
        assert torch.equal(native.image_encoder(x), original.image_encoder(x))
    at_512 = build_backbone("tiny", input_size=512, checkpoint=path)
    enc = at_512.image_encoder
    assert enc.pos_embed.shape[1:3] == (32, 32)
    assert enc.blocks[1].attn.rel_pos_h.shape[0] == 63  # global block: 2 * 32 - 1
    assert torch.equal(enc.blocks[0].attn.rel_pos_h, original.image_encoder.blocks[0].attn.rel_pos_h)  # window
    with torch.no_grad():
        out = enc(torch.rand(1, 3, 512, 512))
    assert out.shape == (1, 32, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(SamunetError, match=r"this is a tiny ViT file, not what backbone vit_b takes \(a ViT-B file\)"):
        build_backbone("vit_b", checkpoint=path)
    with pytest.raises(SamunetError, match="not a multiple of the patch size"):
        build_backbone("tiny", input_size=500, checkpoint=path)


def test_missing_user_checkpoint_is_explained(monkeypatch, tmp_path):
    monkeypatch.delenv("SAMUNET_CHECKPOINTS", raising=False)
    with pytest.raises(SamunetError, match="no checkpoint for backbone vit_b: pass --checkpoint PATH"):
        build_backbone("vit_b")
    monkeypatch.setenv("SAMUNET_CHECKPOINTS", str(tmp_path))
    with pytest.raises(SamunetError, match="sam_vit_b_01ec64.pth"):
        build_backbone("vit_b")
    with pytest.raises(SamunetError, match="runs only at input size 1024"):
        build_backbone("mobile_sam", input_size=512)
    with pytest.raises(SamunetError, match="input size 100: use a multiple of 32"):
        build_backbone("litemedsam", input_size=100)


def test_lora_both_on_vit_b_is_small():
    with torch.device("meta"):
        model = build_model("vit_b", "lora_both", K, weights=False)
    size_mb = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad) / 1e6
    assert size_mb < 5  # SAMed's LoRA checkpoint is about 18 MB; the issue allows 25


def test_export_merges_lora_into_plain_segment_anything_weights(tmp_path):
    from segment_anything.modeling import MaskDecoder

    from samunet.models.decoding import decode_masks, encode_prompts
    from samunet.models.export import main as export

    model = train_steps(train_steps(tiny("lora_both")), seed=1)
    with torch.no_grad():  # make the LoRA update clearly non-zero
        for name, p in model.named_parameters():
            if "lora_b" in name:
                p.normal_(std=0.05)
    path = tmp_path / "c.pth"
    save_checkpoint(path, model)
    out = tmp_path / "exported.pth"
    export([str(path), "-o", str(out)])
    state = torch.load(out, weights_only=True)
    parts = build_backbone("tiny", input_size=SIZE)
    decoder = parts.mask_decoder
    parts.mask_decoder = MaskDecoder(num_multimask_outputs=K, transformer=decoder.transformer,
                                     transformer_dim=decoder.transformer_dim, iou_head_depth=3, iou_head_hidden_dim=32)
    for prefix, module in (("image_encoder.", parts.image_encoder), ("prompt_encoder.", parts.prompt_encoder),
                           ("mask_decoder.", parts.mask_decoder)):
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        emb = parts.image_encoder(x)  # tiny: pixel mean 0, std 1
        sparse, dense = encode_prompts(parts.prompt_encoder, 2)
        masks, _ = decode_masks(parts.mask_decoder, emb, parts.prompt_encoder.get_dense_pe(), sparse, dense)
        expected = model.eval()(x)
    torch.testing.assert_close(F.interpolate(masks, size=(SIZE, SIZE), mode="bilinear"), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(SystemExit):
        export([str(path), "-o", str(out)])  # never overwrites


def test_export_of_a_prompted_model_says_which_tokens_are_which(tmp_path):
    from samunet.file_io import read_json
    from samunet.models.export import main as export

    path, out = tmp_path / "c.pth", tmp_path / "exported.pth"
    save_checkpoint(path, tiny("lora_decoder", prompts={"kind": "box"}))
    export([str(path), "-o", str(out)])
    assert torch.load(out, weights_only=True)["mask_decoder.mask_tokens.weight"].shape[0] == 4 + K + 1
    assert "MaskDecoder(num_multimask_outputs=6); mask tokens 0-3 are SAM's" in read_json(out.with_suffix(".json"))["loads_into"]


def test_strategies_command_lists_every_strategy(capsys):
    from samunet.models.strategies_cli import main

    main(["-b", "tiny", "-k", "2"])
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines[2:]}
    assert set(rows) == set(STRATEGIES)
    trainable, total = parameter_counts(build_model("tiny", "lora_both", 2))
    assert rows["lora_both"][1:3] == [f"{trainable:,}", f"{total:,}"]


def test_mobile_sam_checkpoint_loads_strictly_and_rejects_vit_files(tmp_path):
    parts = build_backbone("mobile_sam", weights=False)
    # MobileSAM's layout (ChaoningZhang/MobileSAM tiny_vit_sam.py): a stride-4 patch embedding of two 3x3
    # convolutions, stages at 256/128/64/64 for a 1024 input, SAM's 64 x 64 grid out, and an ImageNet
    # classifier in the file that SAM never uses.
    encoder = parts.image_encoder
    assert encoder.patch_embed.seq[0].c.weight.shape == (32, 3, 3, 3)
    assert encoder.patch_embed.seq[2].c.weight.shape == (64, 32, 3, 3)
    assert [layer.input_resolution for layer in encoder.layers] == [(256, 256), (128, 128), (64, 64), (64, 64)]
    assert parts.prompt_encoder.image_embedding_size == (64, 64)
    with torch.no_grad():
        assert encoder.eval()(torch.rand(1, 3, 1024, 1024)).shape == (1, 256, 64, 64)
    path = tmp_path / "mobile_sam.pt"
    _sam_checkpoint(parts, path)
    state = torch.load(path, weights_only=True)
    state.update({"image_encoder.norm_head.weight": torch.ones(320), "image_encoder.norm_head.bias": torch.zeros(320),
                  "image_encoder.head.weight": torch.zeros(1000, 320), "image_encoder.head.bias": torch.zeros(1000)})
    torch.save(state, path)
    loaded = build_backbone("mobile_sam", checkpoint=path)
    for (name, a), b in zip(parts.image_encoder.state_dict().items(), loaded.image_encoder.state_dict().values()):
        assert torch.equal(a, b), name
    vit_path = tmp_path / "vit.pth"
    _sam_checkpoint(build_backbone("tiny"), vit_path)
    with pytest.raises(SamunetError, match=r"this is a tiny ViT file, not what backbone mobile_sam takes \(a TinyViT"):
        build_backbone("mobile_sam", checkpoint=vit_path)


def test_prompted_sam_decoder_head_takes_points_with_or_without_boxes():
    from samunet.prompts.derivation import Prompt
    from samunet.prompts.tensors import in_prompt_order, prompt_groups

    model = tiny("decoder", prompts={"kind": "box+point"}).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    prompts = [Prompt(0, 1, None, ((20, 30, 1),)), Prompt(1, 1, None, ((40, 10, 1), (44, 12, 0))),
               Prompt(1, 2, (30.0, 5.0, 50.0, 20.0), ((40, 10, 1),)), Prompt(0, 2, (30.0, 5.0, 50.0, 20.0))]
    groups = prompt_groups(prompts, "cpu")
    assert len(groups) == 3  # points only / box and points / box only: three token sequences
    with torch.no_grad():
        _, masks = model(images, groups)
    masks = in_prompt_order(groups, masks)
    assert [m.shape for m in masks] == [(SIZE, SIZE)] * 4
    assert not torch.allclose(masks[2], masks[3])  # the point changes the box's mask


def test_inference_precision_keeps_the_model_outputs():
    """The inference model (folded batch norms, bf16 encoder, one slice at a time on CPU) computes
    what the trained model computes, to bf16 accuracy; folding alone is exact to fp32 rounding."""
    import copy

    from samunet.models.backbones import build_architecture
    from samunet.models.inference_precision import fold_batch_norms, for_inference

    torch.manual_seed(0)
    encoder = build_architecture("litemedsam").image_encoder.eval()
    for module in encoder.modules():  # non-trivial batch-norm statistics, so folding has work to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        reference = encoder(images)
        folded = fold_batch_norms(copy.deepcopy(encoder))
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert torch.allclose(folded(images), reference, atol=1e-4, rtol=1e-4)

    model = tiny("decoder")
    original = copy.deepcopy(model).eval()
    fast = for_inference(model, torch.bfloat16)
    assert fast.encoder.encoder.patch_embed.proj.weight.dtype == torch.bfloat16
    images = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = original(images).float(), fast(images).float()
    assert ((got - expected).norm() / expected.norm()).item() < 0.05
    assert for_inference(original, None).encoder is original.encoder  # amp off: untouched


def test_channels_last_gelu_computes_gelu_and_keeps_the_layout():
    from samunet.models.inference_precision import ChannelsLastGELU, channels_last_gelus

    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    for approximate in ("none", "tanh"):
        y = ChannelsLastGELU(approximate=approximate)(x)
        torch.testing.assert_close(y, torch.nn.functional.gelu(x.contiguous(), approximate=approximate))
        assert y.is_contiguous(memory_format=torch.channels_last)
    tokens = torch.randn(2, 6, 8)  # token tensors take the plain path
    torch.testing.assert_close(ChannelsLastGELU()(tokens), torch.nn.functional.gelu(tokens))
    module = channels_last_gelus(torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), torch.nn.GELU("tanh")))
    assert isinstance(module[1], ChannelsLastGELU) and module[1].approximate == "tanh"


def test_inference_merges_lora_into_plain_linear_layers():
    import copy

    from samunet.models.inference_precision import for_inference
    from samunet.models.lora import LoRALinear

    model = tiny("lora_both")
    train_steps(model)  # non-zero LoRA updates (B starts at zero)
    assert any(m.lora_b.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))
    original = copy.deepcopy(model).eval()
    merged = for_inference(model, None)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(merged(images), original(images), atol=1e-4, rtol=1e-4)


def test_tiny_vit_at_other_input_sizes():
    """At 256 our TinyViT is the vendored LiteMedSAM encoder (same weights, same outputs); at 128 the
    same weights give a 32 x 32 embedding grid and the whole model 128 x 128 logits."""
    from samunet.models.tiny_vit import import_medsam_lite, tiny_vit

    _, VendorTinyViT = import_medsam_lite()
    torch.manual_seed(0)
    ours = tiny_vit("litemedsam", 256).eval()
    vendor = VendorTinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                           num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mbconv_expand_ratio=4.0,
                           local_conv_size=3, drop_path_rate=0.0).eval()
    vendor.load_state_dict(ours.state_dict(), strict=True)
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ours(image), vendor(image))
    for size in (96, 128):  # sizes the planner gives small slices
        small = tiny_vit("litemedsam", size).eval()
        small.load_state_dict(ours.state_dict(), strict=True)  # no weight depends on the input size
        model = build_model("litemedsam", "decoder", K, input_size=size, weights=False).eval()
        with torch.no_grad():
            assert small(torch.rand(1, 3, size, size)).shape == (1, 256, size // 4, size // 4)
            assert model(torch.rand(2, 3, size, size)).shape == (2, K + 1, size, size)


def test_an_untrained_prompted_model_is_sam_as_released():
    """The prompted head's mask for a box is SAM's single-mask output (multimask_output=False) until trained."""
    from samunet.models.prompted import segment_with_boxes
    from samunet.prompts.derivation import Prompt
    from samunet.prompts.tensors import prompt_groups

    model = tiny("decoder", prompts={"kind": "box"}).eval()
    parts = build_backbone("tiny", input_size=SIZE)
    images = torch.rand(2, 3, SIZE, SIZE)
    boxes = [(4.0, 6.0, 40.0, 50.0), (20.0, 10.0, 30.0, 60.0)]
    with torch.no_grad():
        _, (ours,) = model(images, prompt_groups([Prompt(i, 1, b) for i, b in enumerate(boxes)], "cpu"))
        released = segment_with_boxes(parts, images, torch.tensor(boxes), model.metadata["pixel_mean"],
                                      model.metadata["pixel_std"])
    torch.testing.assert_close(ours, released, rtol=1e-4, atol=1e-4)
