import math

import numpy as np
import pytest

from samunet.connected_components import largest_component_share
from samunet.cropping import bounding_box, nonzero_mask
from samunet.errors import SamunetError
from samunet.file_io import read_json, write_json
from samunet.imageio import read_image, write_image
from samunet.models.backbone_registry import BACKBONES
from samunet.planners.backbone_sizing import batch_size_for
from samunet.planners.cli import run_fingerprint, run_planning
from samunet.planners.experiment_planner import plan_experiment, target_spacing_3d
from samunet.planners.fingerprint import FINGERPRINT_VERSION
from samunet.planners.plan_file import PlanView, check_plan
from samunet.planners.splits import make_splits
from samunet.raw_dataset import load_raw_dataset


def fingerprint_of(env, raw_folder, **kwargs):
    run_fingerprint(990, num_processes=kwargs.pop("num_processes", 1), **kwargs)
    return read_json(env.preprocessed / raw_folder.name / "dataset_fingerprint.json")


def test_fingerprint_matches_the_data(make_dataset, env):
    raw_folder = make_dataset(num_cases=3, num_channels=2, spacing_jitter=0.1)
    fp = fingerprint_of(env, raw_folder)
    raw = load_raw_dataset(raw_folder)
    foreground = {0: [], 1: []}
    for i, case in enumerate(raw.cases.values()):
        images = [read_image(p)[0] for p in case.images]
        label, geometry = read_image(case.label)
        assert fp["spacings"][i] == pytest.approx(list(geometry.spacing_zyx))
        box = bounding_box(nonzero_mask(np.stack(images)))
        assert fp["shapes_after_crop"][i] == [hi - lo for lo, hi in box]
        for c in (0, 1):
            foreground[c].append(images[c][label > 0])
    for c in (0, 1):
        values = np.concatenate(foreground[c])
        stats = fp["foreground_intensity_properties_per_channel"][str(c)]
        # every foreground voxel is drawn many times, so min and max are exact; each case gives as many
        # samples (nnU-Net's rule), so the mean is the mean of the per-case means
        assert stats["min"] == values.min() and stats["max"] == values.max()
        assert stats["mean"] == pytest.approx(np.mean([v.mean() for v in foreground[c]]), rel=0.01)
        assert stats["percentile_00_5"] < stats["median"] < stats["percentile_99_5"]
    assert fp["median_relative_size_after_cropping"] < 1


def test_fingerprint_is_reproducible_and_parallel_equals_serial(make_dataset, env):
    raw_folder = make_dataset(num_cases=3)
    first = fingerprint_of(env, raw_folder)
    second = fingerprint_of(env, raw_folder, num_processes=2, clean=True)
    assert first == second


def test_classes_that_are_one_piece_in_every_case_are_planned_as_such(make_dataset, env):
    raw_folder = make_dataset(num_cases=3)
    raw = load_raw_dataset(raw_folder)
    fp = fingerprint_of(env, raw_folder)
    for value in (1, 2):
        share = min(largest_component_share(read_image(c.label)[0] == value) for c in raw.cases.values())
        assert fp["min_largest_component_share_per_label"][str(value)] == pytest.approx(share)
    assert plan_experiment(fp, 8.0)["single_component_labels"] == [1, 2]  # the phantoms: one ellipsoid per class

    # one case's class 1 in two equal pieces: class 1 is no longer planned as one piece
    case = next(iter(raw.cases.values()))
    label, geometry = read_image(case.label)
    label[label == 1] = 0
    label[:2, :3, :3] = label[:2, -3:, -3:] = 1
    write_image(label, geometry, case.label)
    fp = fingerprint_of(env, raw_folder)
    assert fp["min_largest_component_share_per_label"]["1"] == pytest.approx(0.5)
    plan = plan_experiment(fp, 8.0)
    assert plan["single_component_labels"] == [2]
    for bad in ([3], [0], "1", [1.0]):  # label values of the plan's foreground classes only
        with pytest.raises(SamunetError, match="plan: 'single_component_labels' must be a list of foreground"):
            check_plan({**plan, "single_component_labels": bad}, "plan")
    del plan["single_component_labels"]  # a plan from before it: no class is known to be one piece
    assert PlanView(check_plan(plan, "plan")).single_component_labels == []

    # a fingerprint from before the shares were recorded is computed again, not reused
    path = env.preprocessed / raw_folder.name / "dataset_fingerprint.json"
    write_json({k: v for k, v in fp.items() if k != "min_largest_component_share_per_label"} | {"fingerprint_version": 1},
               path)
    assert fingerprint_of(env, raw_folder) == fp and fp["fingerprint_version"] == FINGERPRINT_VERSION


def test_target_spacing_follows_nnunet_anisotropy_rule():
    spacings = [[5.0, 0.8, 0.8], [6.0, 0.8, 0.8], [3.0, 0.8, 0.8], [5.0, 0.9, 0.9]]
    few_slices = [[20, 200, 200]] * 4
    assert target_spacing_3d(spacings, few_slices)[0] == pytest.approx(np.percentile([5, 6, 3, 5], 10))
    many_slices = [[200, 200, 200]] * 4
    assert target_spacing_3d(spacings, many_slices) == pytest.approx([5.0, 0.8, 0.8])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slicing_axis_is_the_lowest_resolution_axis(make_dataset, env, axis):
    raw_folder = make_dataset(anisotropic_axis=axis)
    fingerprint_of(env, raw_folder)
    run_planning(990)
    plan = read_json(env.preprocessed / raw_folder.name / "samunet_plans.json")
    assert plan["slicing_axis"] == axis
    assert plan["transpose_forward"][0] == axis
    assert [plan["transpose_forward"][i] for i in plan["transpose_backward"]] == [0, 1, 2]
    assert plan["in_plane_spacing_transposed"] == pytest.approx([0.8, 0.8])


def test_splits_are_nnunet_kfold_on_sorted_ids():
    ids = [f"case_{i:02d}" for i in range(13)][::-1]
    splits = make_splits(ids)
    # nnU-Net: sklearn KFold(5, shuffle=True, random_state=12345): one seeded shuffle of the sorted ids,
    # then consecutive folds, the first n % 5 one larger.
    order = np.arange(13)
    np.random.RandomState(12345).shuffle(order)
    keys = sorted(ids)
    sizes = [3, 3, 3, 2, 2]
    start = 0
    for fold, size in zip(splits, sizes):
        assert fold["val"] == sorted(keys[i] for i in order[start : start + size])
        assert sorted(fold["train"] + fold["val"]) == keys
        start += size
    assert len(make_splits(ids[:3])) == 3
    assert make_splits(["only"]) == [{"train": ["only"], "val": ["only"]}]


def test_default_backbone_is_vit_b_only_with_its_checkpoint(make_dataset, env, tmp_path, capsys):
    raw_folder = make_dataset()
    fp = fingerprint_of(env, raw_folder)
    plan = plan_experiment(fp, 8.0, checkpoints_dir=str(tmp_path))
    assert plan["default_backbone"] == "litemedsam" and "sam_vit_b_01ec64.pth" in plan["default_backbone_reason"]
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert plan_experiment(fp, 8.0, checkpoints_dir=str(tmp_path))["default_backbone"] == "vit_b"
    run_planning(990)
    assert "default backbone: litemedsam" in capsys.readouterr().out


def test_input_size_follows_the_median_slice():
    from samunet.planners.backbone_sizing import input_size_for

    lite, vit = BACKBONES["litemedsam"], BACKBONES["vit_b"]
    assert input_size_for(lite, [50, 35]) == 96  # MSD hippocampus: 1.9 mask pixels per voxel at 96
    assert input_size_for(lite, [64, 20]) == 96 and input_size_for(lite, [65, 20]) == 128
    assert input_size_for(lite, [20, 20]) == 96 and input_size_for(lite, [170, 9]) == 256  # 96 to 256
    assert input_size_for(lite, [512, 512]) == 256  # larger slices are resized down to the largest size
    assert input_size_for(vit, [50, 35]) == 1024  # one size only


def test_batch_sizes_follow_the_memory_budget(make_dataset, env):
    raw_folder = make_dataset()
    fp = fingerprint_of(env, raw_folder)
    small, large = plan_experiment(fp, 8.0), plan_experiment(fp, 80.0)
    assert set(small["backbones"]) == set(BACKBONES)
    assert small["backbones"]["vit_b"]["input_size"] == 1024
    longest = max(small["median_in_plane_shape_transposed"])
    # the smallest multiple of 32 from 96 to 256 with 1.5 pixels per voxel (backbone_sizing.input_size_for)
    assert small["backbones"]["litemedsam"]["input_size"] == min(256, max(96, 32 * math.ceil(1.5 * longest / 32)))
    for name, entry in large["backbones"].items():
        assert entry["batch_size"] >= small["backbones"][name]["batch_size"] >= 1
        if entry["batch_size"] > 1:
            assert entry["estimated_memory_gb"] <= 80.0
    assert large["backbones"]["vit_b"]["batch_size"] > small["backbones"]["vit_b"]["batch_size"]
    spec = BACKBONES["vit_b"]
    assert batch_size_for(spec, 512, 8.0) > batch_size_for(spec, 1024, 8.0)
