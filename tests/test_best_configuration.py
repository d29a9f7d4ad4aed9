import numpy as np
import pytest

from samunet.errors import SamunetError
from samunet.evaluation.find_best_configuration import find_best
from samunet.evaluation.find_best_configuration import main as find_best_cli
from samunet.file_io import read_json
from samunet.inference.predict_cli import main as predict
from samunet.run_training import train

from training_helpers import prepare_dataset, train_args


def test_ranking_ensembles_and_short_predict(make_dataset, env, tmp_path, capsys):
    prepare_dataset(make_dataset, env, num_cases=5)
    with pytest.raises(SamunetError, match="results: folder does not exist"):
        find_best(990)
    for strategy in ("decoder", "linear_head"):
        for fold in ("0", "1"):
            train(train_args(strategy, "--epochs", "1", "--iters-per-epoch", "6", "--lr", "2e-3", "--val-slices", "4",
                             fold=fold), show_progress=False)
    find_best_cli(["990", "-f", "0", "1"])
    out = capsys.readouterr().out
    results = env.results / "Dataset990_Synthetic"
    best = read_json(results / "best_configuration.json")
    names = [r["configuration"] for r in best["ranking"]]
    assert sorted(names) == ["decoder__tiny", "decoder__tiny+linear_head__tiny", "linear_head__tiny"]
    scores = [r["cv_foreground_dice"] for r in best["ranking"]]
    assert scores == sorted(scores, reverse=True) and best["configuration"] == names[0]
    for row in best["ranking"]:  # single configurations: mean of per-case foreground Dice over both folds
        if "+" in row["configuration"]:
            continue
        per_case = []
        for fold in ("0", "1"):
            summary = read_json(results / row["configuration"] / f"fold_{fold}" / "validation" / "summary.json")
            for case in summary["metric_per_case"]:
                dice = [m["Dice"] for m in case["metrics"].values() if not np.isnan(m["Dice"])]
                per_case.append(np.mean(dice))
        assert row["cv_foreground_dice"] == pytest.approx(np.mean(per_case))
    assert "predict with:\n  samunet_predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d Dataset990_Synthetic" in out

    predict(["-i", str(env.raw / "Dataset990_Synthetic" / "imagesTr"), "-o", str(tmp_path / "p"), "--disable-tta"])
    out = capsys.readouterr().out
    assert f"{best['configuration']}, folds 0 1 (best configuration from best_configuration.json)" in out
    assert len(list((tmp_path / "p").glob("*.nii.gz"))) == 5
