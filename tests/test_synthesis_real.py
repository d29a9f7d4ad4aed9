"""`samunet_synthesize` with its defaults on real hippocampus MR: labels transferred from two labelled
exemplars onto the images of four other cases agree with those cases' own labels, which synthesis never
read (the test reads them to check). Skipped without ../shared/data."""
import json

import numpy as np
import pytest

from samunet.dataset_conversion.convert_msd import main as convert_msd
from samunet.plan_and_preprocess import main as plan_and_preprocess
from samunet.preprocessing.storage import load_case
from samunet.synthesis.label_fusion import foreground_dice
from samunet.synthesis.synthesize_cli import main as samunet_synthesize

from conftest import hippocampus_subset, requires_shared_data

pytestmark = [requires_shared_data, pytest.mark.real_data]

CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007",
         "hippocampus_008", "hippocampus_011")


def test_registration_transfers_real_hippocampus_labels(env, tmp_path):
    convert_msd(["-i", str(hippocampus_subset(tmp_path, CASES)), "-overwrite_id", "501", "-np", "2"])
    raw = env.raw / "Dataset501_Hippocampus"
    plan_and_preprocess(["-d", "501", "-np", "2"])
    preprocessed = env.preprocessed / raw.name
    # exemplars: the first two training cases; the last case validates and is never a target
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": list(CASES[:-1]), "val": [CASES[-1]]}]))
    samunet_synthesize(["501", "--num-train-cases", "2"])
    folder = preprocessed / "synthetic_samunet_2d" / "registration_fold0_n2"
    description = json.loads((folder / "synthesis.json").read_text())
    assert sorted(info["target"] for info in description["cases"].values()) == [f"Tr_{c}" for c in CASES[2:-1]]
    dice = []
    for case_id, info in description["cases"].items():
        _, seg, props = load_case(folder, case_id)
        _, truth, _ = load_case(preprocessed / "samunet_2d", info["target"].removeprefix("Tr_"))
        dice.append(foreground_dice(seg, truth))
        assert props["synthesis"]["agreement"] > 0.5
    print(f"transferred-label Dice per target: {np.round(dice, 3)}; quality "
          f"{[round(i['quality'], 3) for i in description['cases'].values()]}")
    assert np.mean(dice) > 0.7 and min(dice) > 0.5
