"""samunet_demo end to end with its defaults (LiteMedSAM, as the README runs it), and its refusals on the
`tiny` backbone so that they take seconds."""
import json

import numpy as np
import pytest

from samunet.demo import main as demo
from samunet.imageio import read_image

ARGS = ["-b", "tiny", "--train-cases", "3", "--heldout-cases", "2", "--epochs", "1", "--iters-per-epoch", "2",
        "--batch-size", "2", "-np", "1", "--quiet"]


# The README shows 0.96; an all-background prediction scores 0 and a model mirrored at test time although
# it never saw mirrored slices scored under 0.1 on held-out hippocampus cases.
MIN_HELDOUT_DICE = 0.85


def test_demo_runs_end_to_end_and_again(env, tmp_path, capsys):
    out = tmp_path / "demo"
    demo(["--output", str(out), "--quiet"])  # every default: 9 training phantoms, 3 held out, LiteMedSAM
    printed = capsys.readouterr().out
    assert "Dice" in printed and "HD95 (mm)" in printed

    split = json.loads((out / "preprocessed" / "Dataset990_Synthetic" / "splits_final.json").read_text())
    assert split == [{"train": [f"synthetic_{i:03d}" for i in range(9)],
                      "val": ["synthetic_009", "synthetic_010", "synthetic_011"]}]
    for case_id in split[0]["val"]:  # predicted from the raw files, in their geometry
        image, geometry = read_image(out / "heldout" / "imagesTs" / f"{case_id}_0000.nii.gz")
        prediction, predicted_geometry = read_image(out / "predictions" / f"{case_id}.nii.gz")
        assert prediction.shape == image.shape
        assert predicted_geometry.spacing == geometry.spacing and predicted_geometry.origin == geometry.origin
        # NIfTI stores the direction as a float32 quaternion: equal up to that precision
        assert predicted_geometry.direction == pytest.approx(geometry.direction, abs=1e-6)
        assert set(np.unique(prediction)) <= {0, 1, 2}
        assert (out / "overlays" / f"{case_id}.png").stat().st_size > 1000
    summary = json.loads((out / "predictions" / "summary.json").read_text())
    assert [c["prediction"].split("/")[-1] for c in summary["metric_per_case"]] == \
        ["synthetic_009.nii.gz", "synthetic_010.nii.gz", "synthetic_011.nii.gz"]
    assert summary["foreground_mean"]["Dice"] >= MIN_HELDOUT_DICE, summary["foreground_mean"]
    assert (out / "progress.png").is_file()
    # the user's folders are not touched
    assert not any(env.raw.iterdir()) and not env.preprocessed.exists() and not env.results.exists()

    checkpoint = out / "results" / "Dataset990_Synthetic" / "decoder__litemedsam" / "fold_0" / "checkpoint_final.pth"
    stamp = checkpoint.stat().st_mtime_ns
    demo(["--output", str(out), "--quiet"])  # a second run reuses the trained model
    assert checkpoint.stat().st_mtime_ns == stamp
    assert "training already finished" in capsys.readouterr().out


def test_demo_refuses_a_folder_that_is_not_its_own(env, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(SystemExit) as exit_info:
        demo(["--output", str(out), *ARGS])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty and not a samunet_demo folder" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_demo_with_a_raw_dataset_that_is_too_small(env, tmp_path, make_dataset, capsys):
    raw = make_dataset(991)  # 4 cases
    with pytest.raises(SystemExit):
        demo(["--output", str(tmp_path / "demo"), "--raw", str(raw), *ARGS])
    err = capsys.readouterr().err
    assert "has 4 labelled cases; --train-cases 3 + --heldout-cases 2 is more" in err
    assert not (raw / "samunet_demo.json").exists()


def test_demo_pretrains_first_and_fine_tunes_from_the_pretrained_encoder(env, tmp_path, capsys):
    out = tmp_path / "demo"
    demo(["--output", str(out), *ARGS, "--pretrained", "demo_ssl", "--pretrain-epochs", "1"])
    results = out / "results" / "Dataset990_Synthetic"
    description = json.loads((results / "pretrained" / "demo_ssl" / "encoder.json").read_text())
    assert description["data"]["cases"] == 5 and description["steps"] == 2  # all 5 images, labels unused
    checkpoint = json.loads((results / "decoder__tiny@demo_ssl" / "fold_0" / "checkpoint_final.json").read_text())
    assert checkpoint["pretrained_encoder"] == {"name": "demo_ssl", "sha256": description["sha256"]}
    assert (out / "predictions" / "summary.json").is_file()
    capsys.readouterr()
    demo(["--output", str(out), *ARGS, "--pretrained", "demo_ssl", "--pretrain-epochs", "1"])
    printed = capsys.readouterr().out
    assert "pretraining already finished" in printed and "training already finished" in printed
