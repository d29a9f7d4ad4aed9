"""Prompt derivation from labels, the prompts file, and the mapping of original-image coordinates to
preprocessed slices at input size."""
import numpy as np
import pytest

from samunet.errors import SamunetError
from samunet.file_io import write_json
from samunet.imageio import Geometry
from samunet.models.input_mapping import EncoderInput, InputMapper
from samunet.preprocessing.preprocess_case import labels_like_case, preprocess_case
from samunet.prompts.derivation import PromptRule, parse_jitter, prompts_from_labels
from samunet.prompts.mapping import class_prompts
from samunet.prompts.prompt_file import PromptFile, prompt_file_content


def _labels():
    labels = np.zeros((3, 64, 64), dtype=np.int64)
    labels[0, 10:20, 30:50] = 1  # rows 10..19, columns 30..49
    labels[0, 40:44, 5:9] = 2
    labels[2, 33, 17] = 1  # a structure of one pixel
    return labels  # slice 1 is empty


def test_prompts_from_a_mask_are_its_boxes_grown_by_half_the_jitter_and_its_deepest_points():
    prompts = prompts_from_labels(_labels(), PromptRule("box+point", box_jitter="0"))
    assert [(p.slice_index, p.label) for p in prompts] == [(0, 1), (0, 2), (2, 1)]  # nothing on the empty slice
    assert prompts[0].box == (30.0, 10.0, 49.0, 19.0)
    assert prompts[2].box == (17.0, 33.0, 17.0, 33.0) and prompts[2].points == ((17, 33, 1),)
    x, y, positive = prompts[0].points[0]
    assert positive == 1 and 34 <= x <= 45 and 14 <= y <= 15  # the middle of a 10-row band
    # by default (jitter 1 pixel at input size 64) each side moves out by the mean training move, 0.5
    grown = prompts_from_labels(_labels(), PromptRule("box", box_jitter="4"))
    assert grown[0].box == (28.0, 8.0, 51.0, 21.0) and grown[2].box == (15.0, 31.0, 19.0, 35.0)
    assert prompts_from_labels(_labels(), PromptRule("box"))[2].box == (16.5, 32.5, 17.5, 33.5)


@pytest.mark.parametrize("jitter, limit", [("3", lambda extent: 3), ("10%", lambda extent: 0.1 * extent)])
def test_training_boxes_grow_outwards_by_at_most_the_jitter(jitter, limit):
    labels = _labels()
    rule = PromptRule("box+point", box_jitter=jitter, negative_probability=1.0)
    rng = np.random.default_rng(0)
    moves, negatives = [], 0
    for _ in range(200):
        for p in prompts_from_labels(labels, rule, rng):
            mask = labels[p.slice_index] == p.label
            exact = prompts_from_labels(np.where(mask, p.label, 0)[None], PromptRule("box", box_jitter="0"))[0].box
            x0, y0, x1, y1 = exact
            grow = np.array([x0 - p.box[0], y0 - p.box[1], p.box[2] - x1, p.box[3] - y1])
            extents = np.array([x1 - x0 + 1, y1 - y0 + 1] * 2)
            assert (grow >= 0).all() and all(g <= limit(e) + 1e-9 for g, e in zip(grow, extents))
            assert min(p.box) >= 0 and max(p.box) <= 63
            moves.append(grow)
            (px, py, positive), *rest = p.points
            assert positive == 1 and mask[py, px]
            for nx, ny, label in rest:
                negatives += 1
                assert label == 0 and not mask[ny, nx]
                assert p.box[0] - 0.5 <= nx <= p.box[2] + 0.5 and p.box[1] - 0.5 <= ny <= p.box[3] + 0.5
    assert np.max(moves) > 0.5 * limit(20)  # the jitter is used, not just allowed
    assert negatives > 0


def test_default_jitter_is_medsams_scaled_to_the_input_size():
    assert PromptRule().jitter(10, 256) == 5 and PromptRule().jitter(10, 1024) == 20 and PromptRule().jitter(10, 64) == 1
    assert parse_jitter("10%") == (0.1, True) and parse_jitter("4") == (4.0, False)
    for bad in ("-1", "x", "nan%"):
        with pytest.raises(SamunetError, match="box jitter"):
            PromptRule(box_jitter=bad)


def _rotated_anisotropic_case():
    """A case whose slicing axis is x (transposed), with a zero border (cropped), anisotropic spacing
    (resampled in-plane), a rotated direction, and a box-shaped structure."""
    image = np.zeros((14, 40, 30), dtype=np.float32)  # (z, y, x)
    image[2:13, 3:37, 4:27] = np.random.default_rng(0).normal(100, 10, (11, 34, 23))
    seg = np.zeros(image.shape, dtype=np.uint8)
    seg[4:9, 10:26, 8:18] = 1  # z 4..8, y 10..25, x 8..17
    c, s = np.cos(0.4), np.sin(0.4)
    geometry = Geometry((0.7, 0.9, 3.0), (12.0, -30.0, 5.0), (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    plan = {"transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0], "in_plane_spacing_transposed": [1.1, 1.3],
            "normalization": [{"scheme": "zscore"}], "labels": {"background": 0, "thing": 1}}
    data, pre_seg, properties = preprocess_case([image], seg, geometry, plan)
    return seg, geometry, data, pre_seg, properties


def test_a_voxel_box_lands_on_the_structure_at_input_size():
    seg, _, data, pre_seg, properties = _rotated_anisotropic_case()
    assert properties["crop_box_transposed"] != [[0, n] for n in properties["shape_after_transpose"]]
    assert data.shape[2:] != tuple(properties["shape_after_crop"][1:])  # resampled in-plane
    size = 64
    mapped = class_prompts(1, [(8, 10, 4, 17, 25, 8)], [], properties, size)
    # reference: the box of the structure as preprocessed and resized to input size, slice by slice
    mapper = InputMapper([[0.0, 1.0]], EncoderInput.default(1), (0, 1), size, "cpu")
    at_input = mapper.labels([pre_seg[s] for s in range(pre_seg.shape[0])]).numpy()
    reference = {p.slice_index: p.box for p in prompts_from_labels(at_input, PromptRule("box", box_jitter="0"))}
    assert sorted(p.slice_index for p in mapped) == sorted(reference)
    scale = [size / (hi - lo) for lo, hi in properties["crop_box_transposed"][1:]]  # input pixels per voxel
    for prompt in mapped:
        ref = reference[prompt.slice_index]
        tolerance = [max(1.0, scale[1] / 2 + 0.5), max(1.0, scale[0] / 2 + 0.5)] * 2  # (x, y, x, y)
        assert all(abs(a - b) <= t for a, b, t in zip(prompt.box, ref, tolerance)), (prompt.box, ref)
    # a mask given at prediction goes through the same steps as the training label did
    assert np.array_equal(labels_like_case(seg, properties), pre_seg)


def test_world_coordinates_and_slice_boxes_give_the_same_voxels(tmp_path):
    seg, geometry, _, _, properties = _rotated_anisotropic_case()
    direction = np.array(geometry.direction).reshape(3, 3)

    def world(x, y, z):
        return (np.array(geometry.origin) + direction @ (np.array(geometry.spacing) * [x, y, z])).tolist()

    labels = {"background": 0, "thing": 1}
    voxel_file, world_file = tmp_path / "v.json", tmp_path / "w.json"
    write_json(prompt_file_content({"c": {"thing": {"boxes": [[8, 10, 4, 17, 25, 8]], "points": [[12, 15, 6, 0]],
                                                    "slice_boxes": [{"slice": 5, "box": [8, 10, 17, 25]}]}}}, "user"),
               voxel_file)
    write_json(prompt_file_content({"c": {"1": {"boxes": [world(8, 10, 4) + world(17, 25, 8)],
                                                "points": [world(12, 15, 6) + [0]]}}}, "user", "world"), world_file)
    shape = seg.shape
    voxel = PromptFile.read(voxel_file, labels).voxel_prompts("c", shape, geometry)[1]
    from_world = PromptFile.read(world_file, labels).voxel_prompts("c", shape, geometry)[1]
    assert voxel.boxes == [(8, 10, 4, 17, 25, 8), (8, 10, 5, 17, 25, 5)]
    assert from_world.boxes == voxel.boxes[:1] and from_world.points == voxel.points == [(12, 15, 6, 0)]
    # the point joins the box prompt of the slice it lies on (x = 12 is a slice: the plan slices along x)
    prompts = class_prompts(1, voxel.boxes, voxel.points, properties, 64)
    with_point = [p for p in prompts if p.points]
    assert {p.slice_index for p in with_point} == {12 - properties["crop_box_transposed"][0][0]}
    assert all(p.points[0][2] == 0 for p in with_point)


def test_make_prompts_writes_slice_boxes_around_each_structure(tmp_path, capsys):
    from samunet.file_io import read_json
    from samunet.imageio import write_image
    from samunet.prompts.make_prompts_cli import main as make_prompts

    from training_helpers import one_line_error

    seg, geometry, *_ = _rotated_anisotropic_case()
    labels = tmp_path / "labels"
    labels.mkdir()
    write_image(seg, geometry, labels / "c.nii.gz")
    out = tmp_path / "prompts.json"
    make_prompts([str(labels), "-o", str(out), "--kind", "box+point", "--box-jitter", "2"])
    content = read_json(out)
    assert content["provenance"] == "ground_truth" and content["coordinates"] == "voxel"
    entry = content["cases"]["c"]["1"]
    assert [b["slice"] for b in entry["slice_boxes"]] == [4, 5, 6, 7, 8]  # z 4..8 hold the structure
    for item in entry["slice_boxes"]:
        x0, y0, x1, y1 = item["box"]
        assert 6 <= x0 <= 8 and 17 <= x1 <= 19 and 8 <= y0 <= 10 and 25 <= y1 <= 27  # exact box +- 2 voxels
    assert all(seg[z, y, x] == 1 for x, y, z, positive in entry["points"] if positive == 1)
    # the file reads back against its image
    voxel = PromptFile.read(out, {"background": 0, "thing": 1}).voxel_prompts("c", seg.shape, geometry)
    assert len(voxel[1].boxes) == 5
    (tmp_path / "notes.json").write_text("{}")
    one_line_error(capsys, make_prompts, [str(labels), "-o", str(tmp_path / "notes.json")], "not a samunet prompts file")
    assert (tmp_path / "notes.json").read_text() == "{}"
