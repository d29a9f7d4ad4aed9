"""Exemplar-guided synthesis: the methods on phantoms with a known deformation, the stage (labels of
non-exemplars never read, resumable, invalidated by its inputs), the sampler's mix and training with it."""
import numpy as np
import pytest
from scipy.ndimage import binary_dilation, gaussian_filter, map_coordinates

from samunet.errors import SamunetError
from samunet.file_io import read_json, write_json
from samunet.inference.predict_cli import main as predict
from samunet.preprocessing import storage
from samunet.preprocessing.storage import load_case, load_properties
from samunet.run_training import main as samunet_train
from samunet.run_training import train
from samunet.synthesis.label_fusion import agreement, foreground_dice, fuse_labels
from samunet.synthesis.methods import copy_paste, registration
from samunet.synthesis.quality import sampling_weights
from samunet.synthesis.synthesize_cli import main as samunet_synthesize
from samunet.synthesis.synthetic_set import SyntheticSet, read_synthetic_set, synthesize_set
from samunet.synthesis.volumes import Volume
from samunet.trainers.slice_sampler import SliceSampler

from training_helpers import prepare_dataset, train_args

DATASET = "Dataset990_Synthetic"
SPACING = (1.5, 1.0, 1.0)


def phantom(shape=(24, 40, 40), seed=0):
    """A textured body with two labelled ellipsoids of their own brightness: (image (1, S, H, W), label)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = lambda centre, radii: sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    seg = np.zeros(shape, np.uint8)
    seg[inside((0, -0.2, -0.3), (0.5, 0.25, 0.2))] = 1
    seg[inside((0, 0.25, 0.3), (0.5, 0.2, 0.25))] = 2
    body = inside((0, 0, 0), (0.9, 0.8, 0.8))
    image = body * (1.0 + 6 * gaussian_filter(rng.standard_normal(shape), 2)) + 2.0 * (seg == 1) - 1.0 * (seg == 2)
    return image.astype(np.float32)[None], seg


def deformed(image, seg, shift=(1.5, -3.0, 2.5), amplitude=2.0):
    """The phantom moved by a known shift and a smooth wave (voxels)."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in seg.shape], indexing="ij")
    wave = amplitude * np.sin(grid[1] / seg.shape[1] * 2 * np.pi) * np.cos(grid[2] / seg.shape[2] * np.pi)
    coords = [grid[0] + shift[0], grid[1] + shift[1] + wave, grid[2] + shift[2] + 0.5 * wave]
    return np.stack([map_coordinates(c, coords, order=1) for c in image]), map_coordinates(seg, coords, order=0)


def test_registration_recovers_the_label_of_a_deformed_phantom():
    image, seg = phantom()
    moved_image, moved_seg = deformed(image, seg)
    assert foreground_dice(seg, moved_seg) < 0.6  # the deformation matters
    target = Volume("target", moved_image, SPACING)
    result = registration.synthesize(target, [Volume("exemplar", image, SPACING, seg)], None, {})
    assert result.image is None  # the real image is kept; only the label is new
    assert foreground_dice(result.seg, moved_seg) > 0.9
    assert result.quality > 0.8

    # Large volumes are registered on a shrunk grid, the transform applied at full resolution.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registration, "MAX_VOXELS", 20**3)  # shrinks this phantom by 2
        shrunk = registration.synthesize(target, [Volume("exemplar", image, SPACING, seg)], None, {})
    assert shrunk.seg.shape == moved_seg.shape and foreground_dice(shrunk.seg, moved_seg) > 0.85

    # Several exemplars (the same one moved the other way, and a second phantom): fused, with an agreement
    other_image, other_seg = deformed(*phantom(seed=1), shift=(-1.0, 2.0, -2.0), amplitude=1.0)
    exemplars = [Volume("a", image, SPACING, seg), Volume("b", other_image, SPACING, other_seg),
                 Volume("c", *deformed(image, seg, shift=(0, 1, -1), amplitude=1.0)[:1], SPACING,
                        deformed(image, seg, shift=(0, 1, -1), amplitude=1.0)[1])]
    fused = registration.synthesize(target, exemplars, None, {"fusion": "staple"})
    assert foreground_dice(fused.seg, moved_seg) > 0.9
    assert 0.8 < fused.details["agreement"] <= 1.0 and len(fused.details["correlation_per_exemplar"]) == 3


def test_label_fusion_majority_and_agreement():
    a = np.zeros((2, 4, 4), np.uint8)
    b, c = a.copy(), a.copy()
    a[:, :2] = 1
    b[:, :2] = 1
    c[:, 2:] = 1  # the odd one out
    fused = fuse_labels([a, b, c], "majority")
    assert np.array_equal(fused, a)
    assert agreement([a, b, c], fused) == pytest.approx(2 / 3)
    assert agreement([a, a], a) == 1.0
    big = [m.astype(np.int16) * 300 for m in (a, b, c)]  # label values beyond uint8 survive fusion
    for rule in ("majority", "staple"):
        assert np.array_equal(fuse_labels(big, rule), big[0])


def test_copy_paste_labels_lie_where_the_image_changed():
    image, seg = phantom()
    target_image, _ = phantom(seed=3)
    target = Volume("target", target_image, SPACING)
    result = copy_paste.synthesize(target, [Volume("exemplar", image, SPACING, seg)], np.random.default_rng(0), {})
    labelled = result.seg > 0
    assert labelled.sum() > 0.5 * (seg > 0).sum()  # the structures, deformed, are all there
    assert set(np.unique(result.seg)) == {0, 1, 2}
    change = np.abs(result.image[0] - target_image[0])
    assert (change[labelled] > 1e-3).mean() > 0.97  # the labelled voxels were pasted (a few match by chance)
    strong = change > 0.1 * target_image.std()
    near = binary_dilation(labelled, iterations=3)
    assert (strong & near).sum() / strong.sum() > 0.97  # and what changed is where they are (blended edges)
    assert 0.0 <= result.quality <= 1.0


def test_quality_rule_drops_outliers_and_weights_the_rest():
    weights, floor = sampling_weights({"a": 0.8, "b": 0.6, "c": 0.2, "d": 0.7})
    assert floor == pytest.approx(0.5 * 0.65)
    assert set(weights) == {"a", "b", "d"} and sum(weights.values()) == pytest.approx(1.0)
    assert weights["a"] / weights["b"] == pytest.approx(0.8 / 0.6)


def set_folder(env, name="registration_fold0_n2"):
    return env.preprocessed / DATASET / "synthetic_samunet_2d" / name


def test_stage_reads_no_label_but_the_exemplars_skips_finished_cases_and_follows_its_inputs(make_dataset, env,
                                                                                          monkeypatch, capsys):
    prepare_dataset(make_dataset, env, num_cases=6)
    preprocessed = env.preprocessed / DATASET
    splits = read_json(preprocessed / "splits_final.json")
    train_cases = splits[0]["train"]
    exemplars = train_cases[:2]
    raw = env.raw / DATASET
    for label in (raw / "labelsTr").iterdir():
        label.write_bytes(b"not an image")  # reading any raw label would fail
    opened = []
    real_open = storage._open_b2nd
    monkeypatch.setattr(storage, "_open_b2nd", lambda path: opened.append(str(path)) or real_open(path))
    made = []
    real_synthesize = registration.synthesize
    monkeypatch.setattr(registration, "synthesize", lambda t, *a: made.append(t.case_id) or real_synthesize(t, *a))

    samunet_synthesize(["990", "-f", "0", "--num-train-cases", "2", "-np", "1"])
    folder = set_folder(env)
    description = read_json(folder / "synthesis.json")
    targets = sorted(f"Tr_{c}" for c in train_cases[2:])
    assert sorted(made) == targets  # the fold's other training cases; never its validation cases
    assert sorted(info["target"] for info in description["cases"].values()) == targets
    assert set(description["exemplars"]) == set(exemplars)
    labels_read = {p for p in opened if p.endswith("_seg.b2nd") and "/samunet_2d/" in p}
    assert labels_read == {str(preprocessed / "samunet_2d" / f"{c}_seg.b2nd") for c in exemplars}
    for case_id in description["cases"]:
        data, seg, props = load_case(folder, case_id)
        target = props["synthesis"]["target"]
        source, _, _ = load_case(preprocessed / "unlabelled_samunet_2d", target)
        assert np.array_equal(data, source) and seg.shape == data.shape[1:]
        assert props["shape_after_resampling"] == list(data.shape[1:])  # the plan's geometry conventions
        assert props["class_slices"] and 0 <= props["synthesis"]["quality"] <= 1
        # the synthetic label is the transferred one: close to the target's real label (read here only)
        _, truth, _ = load_case(preprocessed / "samunet_2d", target[len("Tr_"):])
        assert foreground_dice(seg, truth) > 0.6

    # Everything current: nothing is redone. An interrupted case (its properties file missing) is redone alone.
    made.clear()
    samunet_synthesize(["990", "-f", "0", "--num-train-cases", "2", "-np", "1"])
    assert made == []
    interrupted = sorted(description["cases"])[0]
    (folder / f"{interrupted}.json").unlink()
    samunet_synthesize(["990", "-f", "0", "--num-train-cases", "2", "-np", "2"])
    assert sorted(read_json(folder / "synthesis.json")["cases"]) == sorted(description["cases"])
    assert "(1 newly made)" in capsys.readouterr().out

    # A damaged case file is found and redone.
    damaged = sorted(description["cases"])[1]
    (folder / f"{damaged}_seg.b2nd").write_bytes(b"garbage")
    made.clear()
    samunet_synthesize(["990", "-f", "0", "--num-train-cases", "2", "-np", "1"])
    assert made == [read_json(folder / "synthesis.json")["cases"][damaged]["target"]]
    assert load_case(folder, damaged)[1].shape == load_case(folder, damaged)[0].shape[1:]

    # Other exemplars (a changed split) invalidate every case; another N is a set of its own.
    splits[0]["train"] = [train_cases[1], train_cases[0], *train_cases[2:]]
    write_json(splits, preprocessed / "splits_final.json")
    made.clear()
    samunet_synthesize(["990", "-f", "0", "--num-train-cases", "2", "-np", "1"])
    assert sorted(made) == targets
    samunet_synthesize(["990", "-f", "0", "--num-train-cases", "1", "-np", "1"])
    one = read_json(set_folder(env, "registration_fold0_n1") / "synthesis.json")
    assert list(one["exemplars"]) == [train_cases[1]] and len(one["cases"]) == len(train_cases) - 1
    with pytest.raises(SamunetError, match="made from other exemplars"):  # the n2 set is not the n1 one
        read_synthetic_set(preprocessed, read_json(preprocessed / "samunet_plans.json"), "0", 2, "registration",
                           [train_cases[0], train_cases[1]])


def test_a_failed_registration_is_recorded_and_left_out_not_fatal(make_dataset, env, monkeypatch, capsys):
    prepare_dataset(make_dataset, env, num_cases=5)
    real_synthesize = registration.synthesize

    def odd_image(target, *args):
        if target.case_id.endswith("_003"):
            raise RuntimeError("Exception thrown in SimpleITK ImageRegistrationMethod_Execute: too few samples")
        return real_synthesize(target, *args)

    monkeypatch.setattr(registration, "synthesize", odd_image)
    made = synthesize_set(env.raw / DATASET, env.preprocessed / DATASET,
                          read_json(env.preprocessed / DATASET / "samunet_plans.json"), "0", 1)
    failed = "syn_registration_fold0_n1_Tr_synthetic_003"
    description = made.description
    assert description["failed"] == [failed] and description["cases"][failed]["weight"] == 0
    assert failed not in made.case_ids and len(made.case_ids) == description["num_cases"] - 1
    assert "too few samples" in load_properties(made.folder, failed)["synthesis"]["failed"]
    assert "1 failed (listed in synthesis.json)" in capsys.readouterr().out


def test_copy_paste_set_on_two_channel_images_with_imagests(make_dataset, env):
    prepare_dataset(make_dataset, env, num_cases=4, num_channels=2)
    raw = env.raw / DATASET
    (raw / "imagesTs").mkdir()
    for channel in ("0000", "0001"):  # an unlabelled test image joins the targets
        (raw / "imagesTs" / f"new_{channel}.nii.gz").write_bytes((raw / "imagesTr" / f"synthetic_000_{channel}.nii.gz").read_bytes())
    samunet_synthesize(["990", "--num-train-cases", "1", "--method", "copy_paste", "-np", "1"])
    folder = set_folder(env, "copy_paste_fold0_n1")
    description = read_json(folder / "synthesis.json")
    assert description["unlabelled_images"] == {"imagesTr": 4, "imagesTs": 1}
    assert "syn_copy_paste_fold0_n1_Ts_new" in description["cases"]
    for case_id in description["cases"]:
        data, seg, props = load_case(folder, case_id)
        source, _, _ = load_case(env.preprocessed / DATASET / "unlabelled_samunet_2d", props["synthesis"]["target"])
        assert data.shape == source.shape and data.shape[0] == 2 and seg.any()
        for c in range(2):  # pasted into both channels
            assert (data[c][seg > 0] != source[c][seg > 0]).mean() > 0.9


def test_sampler_draws_the_synthetic_share_by_weight(tmp_path):
    def write(folder, case_id):
        storage.save_case(folder, case_id, np.zeros((1, 3, 4, 4), np.float32), np.zeros((3, 4, 4), np.uint8),
                          {"shape_after_resampling": [3, 4, 4], "class_slices": {"1": [1]}})

    real, synthetic = tmp_path / "real", tmp_path / "synthetic"
    write(real, "r")
    for case_id in ("s1", "s2", "s0"):
        write(synthetic, case_id)
    syn = SyntheticSet(synthetic, ["s1", "s2"], np.array([0.75, 0.25]), {})  # s0: dropped by the quality rule
    for fraction in (0.0, 0.5, 1.0):
        sampler = SliceSampler(real, ["r"], synthetic=syn, synthetic_fraction=fraction)
        drawn = [s.case_id for batch in sampler.epoch_batches(0, 100, 8) for s in batch]
        share = np.mean([c != "r" for c in drawn])
        assert abs(share - fraction) < 0.05 and "s0" not in drawn
        if fraction:
            assert drawn.count("s1") / max(1, drawn.count("s2")) == pytest.approx(3, rel=0.25)
    # a share of 0 draws exactly what training without a synthetic set draws
    assert SliceSampler(real, ["r"]).epoch_batches(3, 5, 4) == SliceSampler(
        real, ["r"], synthetic=syn, synthetic_fraction=0.0).epoch_batches(3, 5, 4)


def test_training_with_synthesis_runs_end_to_end_and_predicts(make_dataset, env, tmp_path, monkeypatch):
    prepare_dataset(make_dataset, env, num_cases=6)
    samunet_synthesize(["990", "--num-train-cases", "2", "--fusion", "staple", "-np", "1"])
    made = []
    real_synthesize = registration.synthesize
    monkeypatch.setattr(registration, "synthesize", lambda t, *a: made.append(t.case_id) or real_synthesize(t, *a))
    trainer = train(train_args("decoder", "--num-train-cases", "2", "--synthesis", "--epochs", "1",
                               "--iters-per-epoch", "3", "--val-slices", "4"), show_progress=False)
    assert made == []  # training uses the set as samunet_synthesize made it (STAPLE), not a default remake
    assert trainer.synthetic.description["options"]["fusion"] == "staple"
    preprocessed = env.preprocessed / DATASET
    split = read_json(preprocessed / "splits_final.json")[0]
    synthetic = trainer.synthetic.case_ids
    assert synthetic and all(c.startswith("syn_registration_fold0_n2_") for c in synthetic)
    assert not {s.case_id for s in trainer.val_specs} - set(split["val"])  # validation: real cases only
    fold = env.results / DATASET / "decoder__tiny" / "fold_0"
    summary = read_json(fold / "validation" / "summary.json")
    evaluated = sorted(c["reference"].rsplit("/", 1)[1] for c in summary["metric_per_case"])
    assert evaluated == sorted(f"{c}.nii.gz" for c in split["val"])
    cache = trainer.inputs.cache.folder
    assert all((cache / f"{c}.npy").is_file() for c in synthetic)  # the embedding cache covers them
    record = read_json(fold / "checkpoint_final.json")["synthesis"]
    assert record == {"method": "registration", "num_exemplars": 2, "synthetic_cases": len(synthetic),
                      "synthetic_fraction": 0.5, "set": "registration_fold0_n2"}
    assert "+ %d synthetic (registration" % len(synthetic) in (fold / "training_log.txt").read_text()
    drawn = {s.case_id for batch in trainer.sampler.epoch_batches(0, 3, 4) for s in batch}
    assert drawn & set(synthetic) and drawn & set(split["train"][:2])

    out = tmp_path / "preds"
    predict(["-i", str(env.raw / DATASET / "imagesTr"), "-o", str(out), "-d", "990", "-s", "decoder", "-b", "tiny",
             "-f", "0", "--disable-tta"])
    assert len(list(out.glob("*.nii.gz"))) == 6


def test_synthesis_refuses_bad_requests_in_one_line(make_dataset, env, capsys):
    prepare_dataset(make_dataset, env, num_cases=4)
    cases = [
        (samunet_train, ["990", "decoder", "0", "-b", "tiny", "--synthesis"], "--synthesis needs --num-train-cases"),
        (samunet_synthesize, ["990", "--num-train-cases", "9"], "--num-train-cases must be 1..3 for fold 0"),
        (samunet_synthesize, ["990", "--num-train-cases", "1", "--method", "copy_paste", "--fusion", "staple"],
         "--fusion applies to the registration method only"),
        (samunet_synthesize, ["990", "--num-train-cases", "1", "--extra-images", "/nonexistent"],
         "/nonexistent: --extra-images folder not found"),
    ]
    for command, argv, message in cases:
        with pytest.raises(SystemExit):
            command(argv)
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
