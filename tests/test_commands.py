"""The installed console scripts: user mistakes end in one line on stderr, exit code 2, no traceback."""
import os
import shutil
import subprocess
from importlib.metadata import entry_points

import pytest

COMMANDS = [
    "samunet_plan_and_preprocess", "samunet_extract_fingerprint", "samunet_plan_experiment", "samunet_preprocess",
    "samunet_convert_msd", "samunet_convert_2d", "samunet_convert_sam_med2d", "samunet_convert_csv", "samunet_convert_npz",
    "samunet_generate_synthetic", "samunet_strategies",
    "samunet_export", "samunet_train", "samunet_predict", "samunet_predict_from_modelfolder", "samunet_evaluate",
    "samunet_make_prompts", "samunet_pretrain", "samunet_synthesize",
    "samunet_find_best_configuration", "samunet_determine_postprocessing", "samunet_apply_postprocessing", "samunet_demo",
]


def run(args, env):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAMUNET_", "nnUNet_"))}
    return env


def test_every_command_is_installed_and_prints_help(capsys):
    # in one process: a subprocess per command spends seconds importing torch each time; the
    # subprocess tests below run the installed scripts themselves
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name.startswith("samunet_")}
    assert sorted(scripts) == sorted(COMMANDS)
    for command in COMMANDS:
        assert shutil.which(command), f"{command} is not on PATH"
        with pytest.raises(SystemExit) as stop:
            scripts[command].load()(["--help"])
        assert stop.value.code == 0 and "usage:" in capsys.readouterr().out, command


def test_missing_environment_variable(clean_env):
    result = run(["samunet_plan_and_preprocess", "-d", "501"], clean_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "samunet_plan_and_preprocess: error: environment variable SAMUNET_RAW is not set (nor nnUNet_raw): "
        "export SAMUNET_RAW=/path/to/folder"
    ]


def test_unknown_dataset_and_end_to_end(clean_env, tmp_path):
    env = dict(clean_env, SAMUNET_RAW=str(tmp_path / "raw"), SAMUNET_PREPROCESSED=str(tmp_path / "pre"))
    result = run(["samunet_plan_and_preprocess", "-d", "990"], env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"samunet_plan_and_preprocess: error: {tmp_path / 'raw'}: folder does not exist"
    (tmp_path / "raw").mkdir()
    result = run(["samunet_plan_and_preprocess", "-d", "990"], env)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(
        f"{tmp_path / 'raw'}: no folder Dataset990_* for dataset 990")
    assert run(["samunet_generate_synthetic", "-d", "990", "-n", "3"], env).returncode == 0
    result = run(["samunet_plan_and_preprocess", "-d", "990", "-np", "2"], env)
    assert result.returncode == 0, result.stderr
    assert "default backbone: litemedsam" in result.stdout
    assert len(list((tmp_path / "pre" / "Dataset990_Synthetic" / "samunet_2d").glob("*.b2nd"))) == 6
    again = run(["samunet_generate_synthetic", "-d", "990"], env)  # the README command can be re-run
    assert again.returncode == 0 and "already exists; kept" in again.stdout
    other = run(["samunet_generate_synthetic", "-d", "990", "--name", "Other"], env)
    assert other.returncode == 2 and "dataset id 990 is taken" in other.stderr
