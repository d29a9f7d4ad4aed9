"""Shared set-up for training tests: a planned and preprocessed synthetic dataset with a small `tiny` input;
and the check that a command fails with one line."""
import pytest

from samunet.file_io import read_json, write_json
from samunet.plan_and_preprocess import main as plan_and_preprocess
from samunet.run_training import build_parser

TINY_INPUT = 64


def prepare_dataset(make_dataset, env, num_cases=5, input_size=TINY_INPUT, **kwargs):
    raw = make_dataset(num_cases=num_cases, **kwargs)
    plan_and_preprocess(["-d", "990", "-np", "1"])
    folder = env.preprocessed / raw.name
    plan = read_json(folder / "samunet_plans.json")
    plan["backbones"]["tiny"]["input_size"] = input_size  # the plan is the user's to edit
    write_json(plan, folder / "samunet_plans.json")
    return folder


def train_args(strategy, *extra, fold="0"):
    return build_parser().parse_args(
        ["990", strategy, fold, "-b", "tiny", "--batch-size", "4", "-np", "0", "--amp", "off", *extra]
    )


def one_line_error(capsys, command, argv, *fragments):
    """Run a command that must fail: exit status 2, no traceback, its last stderr line the error."""
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert ": error: " in line, line
    for fragment in fragments:
        assert fragment in line, line
    return line


def edit_encoder_input(folder, **fields):
    """Edit the plan's `encoder_input` as a user would; returns the plan."""
    plan = read_json(folder / "samunet_plans.json")
    plan["encoder_input"].update(fields)
    write_json(plan, folder / "samunet_plans.json")
    return plan


def input_source_trainers(folder, env):
    """Trainers of one un-augmented `decoder` iteration on `tiny`, one per input source: (cached, uncached,
    through the whole model), to compare what each gives the head."""
    import torch
    from dataclasses import replace

    from samunet.trainers.distributed import DistInfo
    from samunet.trainers.encoder_inputs import ImageInputs
    from samunet.trainers.trainer import SamTrainer, TrainConfig

    config = TrainConfig(strategy="decoder", backbone="tiny", fold="0", epochs=1, iters_per_epoch=1, batch_size=4,
                         augment=False)
    cpu = torch.device("cpu")
    def trainer(name, cfg, **kwargs):
        return SamTrainer(cfg, folder, env.results / name, cpu, DistInfo(), show_progress=False, **kwargs)

    return (trainer("a", config), trainer("b", replace(config, use_cache=False)),
            trainer("c", config, input_source=ImageInputs))
