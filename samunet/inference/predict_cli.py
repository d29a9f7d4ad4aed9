"""`samunet_predict` and `samunet_predict_from_modelfolder`.

Cases are read and preprocessed in `-npp` worker processes, predicted in the main process, and restored
to the original geometry and written in `-nps` worker processes. A case that fails (unreadable file,
shapes that disagree) is reported in one line and skipped; the others are still written.
"""
import argparse
import multiprocessing
import sys
from pathlib import Path

from tqdm import tqdm

from samunet.cli_types import int_at_least, non_negative_float
from samunet.dataset_integrity import geometry_problems
from samunet.device import resolve_device
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import remove_temporaries, write_json
from samunet.image_folder import find_image_cases
from samunet.imageio import read_image
from samunet.inference.model_selection import prompt_free_counterpart, resolve_model, trained_folds
from samunet.inference.prediction_info import INFO_FILE, NO_PROMPTS
from samunet.inference.predictor import MIRROR_NEIGHBOURS, SlicePredictor
from samunet.inference.prompt_sources import prompt_source
from samunet.inference.prompted_predictor import PromptedPredictor
from samunet.inference.write_prediction import restore_and_write
from samunet.layout import PLANS_FILE
from samunet.models.amp import default_amp
from samunet.preprocessing.preprocess_case import preprocess_case
from samunet.prompts.prompt_file import PROVENANCES


def _read_and_preprocess(job):
    case_id, paths, plan = job
    try:
        loaded = [read_image(p) for p in paths]
        problems = geometry_problems(case_id, [(a.shape, g) for a, g in loaded], [p.name for p in paths])
        if problems:
            raise SamunetError(problems[0])
        data, _, properties = preprocess_case([a for a, _ in loaded], None, loaded[0][1], plan)
        return case_id, data, properties, None
    except SamunetError as err:
        return case_id, None, None, str(err)


def _restore_and_write(job):
    return restore_and_write(*job)


def _pool(n):
    return multiprocessing.get_context("fork").Pool(n) if n > 1 else None


def check_output_folder(output_folder, overwrite, marker=INFO_FILE, command="samunet_predict"):
    """Label maps go to a new or empty folder, or one that `command` wrote before (it holds `marker`):
    never over files of the user's, such as reference labels."""
    if overwrite or not output_folder.is_dir() or (output_folder / marker).is_file():
        return
    foreign = sorted(p.name for p in output_folder.iterdir() if not p.name.startswith("."))
    if foreign:
        raise SamunetError(f"{output_folder}: holds files {command} did not write ({', '.join(foreign[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}); choose another -o, or pass --overwrite")


def predict_folder(predictor, input_folder, output_folder, continue_prediction=False, save_probabilities=False,
                   num_preprocess=1, num_export=1, description="", overwrite=False, prompts=None):
    """`prompts`: a source from inference/prompt_sources.py (the predictor then a PromptedPredictor)."""
    input_folder, output_folder = Path(input_folder).resolve(), Path(output_folder).resolve()
    if output_folder == input_folder:
        raise SamunetError(f"{output_folder}: the output folder must differ from the input folder")
    check_output_folder(output_folder, overwrite)
    file_ending = predictor.dataset_json["file_ending"]
    cases = find_image_cases(input_folder, len(predictor.dataset_json["channel_names"]), file_ending)
    if prompts is not None:
        chosen = prompts.select(cases)
        if len(chosen) < len(cases):
            print(f"no prompts for {len(cases) - len(chosen)} case(s) of {input_folder}: not predicted")
        cases = chosen
    output_folder.mkdir(parents=True, exist_ok=True)
    if continue_prediction:
        cases = {c: p for c, p in cases.items() if not (output_folder / f"{c}{file_ending}").is_file()}
        remove_temporaries(output_folder)
    # prompted prediction mirrors only in `auto`'s prompt-free first stage
    mirrored_by = predictor if prompts is None else prompts.first_pass_predictor(predictor)
    mirroring = mirrored_by.mirroring_axes if mirrored_by else []
    write_json({"model": description, "tta": bool(mirroring), "mirroring_axes": mirroring,
                "mirrored_slices": ("all" if mirrored_by.mirror_all_slices else "near predicted foreground")
                if mirroring else "none",
                "folds": len(predictor.models), "prompts": prompts.record if prompts else NO_PROMPTS},
               output_folder / INFO_FILE)
    jobs = [(c, paths, predictor.plan) for c, paths in cases.items()]
    failures, written = [], []
    reader, writer = _pool(num_preprocess), _pool(num_export)
    pending = []
    try:
        results = reader.imap(_read_and_preprocess, jobs) if reader else map(_read_and_preprocess, jobs)
        for case_id, data, properties, error in tqdm(results, total=len(jobs), desc="predicting", leave=False):
            if error:
                failures.append(error if case_id in error else f"case {case_id}: {error}")
                tqdm.write(f"skipped: {failures[-1]}", file=sys.stderr)
                continue
            if prompts is None:
                probs = predictor.predict_preprocessed(data)
            else:
                try:
                    probs = prompts.predict(predictor, case_id, data, properties)
                except SamunetError as err:
                    failures.append(str(err) if case_id in str(err) else f"case {case_id}: {err}")
                    tqdm.write(f"skipped: {failures[-1]}", file=sys.stderr)
                    continue
            job = (case_id, probs, properties, output_folder, file_ending, save_probabilities)
            if writer:
                pending.append(writer.apply_async(_restore_and_write, (job,)))
            else:
                written.append(_restore_and_write(job))
        written += [p.get() for p in pending]
    finally:
        for pool in (reader, writer):
            if pool:
                pool.close()
                pool.join()
    return written, failures


def add_common_arguments(p):
    p.add_argument("-i", required=True, help="input folder ({case}_0000.nii.gz, ...)")
    p.add_argument("-o", required=True, help="output folder (created; never the input folder)")
    p.add_argument("-f", nargs="+", default=None, help="folds to ensemble (default: every trained fold)")
    p.add_argument("-chk", default="checkpoint_final", help="checkpoint_final (default) or checkpoint_best")
    p.add_argument("--disable-tta", action="store_true",
                   help="no mirroring (default: mirror along the axes the model was trained to see mirrored)")
    p.add_argument("--tta-all-slices", action="store_true",
                   help=f"mirror every slice (default: only slices within {MIRROR_NEIGHBOURS} of foreground the "
                        "un-mirrored pass found; elsewhere the un-mirrored pass stands)")
    p.add_argument("--save-probabilities", action="store_true", help="also write {case}.npz with class probabilities")
    p.add_argument("--continue-prediction", action="store_true", help="skip cases whose output exists")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an output folder that holds files samunet_predict did not write")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default=None)
    p.add_argument("--batch-slices", type=int_at_least(1), default=None,
                   help="slices per forward pass (default 8; more for inputs under 136 pixels, 16 at 96 and below)")
    p.add_argument("-npp", type=int_at_least(1), default=2, help="processes reading and preprocessing cases (default 2)")
    p.add_argument("-nps", type=int_at_least(1), default=2, help="processes restoring geometry and writing (default 2)")
    p.add_argument("--checkpoint", default=None, help="base SAM weights file, for vit_* / mobile_sam")
    p.add_argument("--prompts", default=None, metavar="FILE|FOLDER|auto",
                   help="prompted prediction with a model trained with --prompts: a prompts file (JSON, see "
                        "samunet_make_prompts), a folder of masks {case}<ending> to derive boxes / points from, or "
                        "auto (a prompt-free result prompts it: of the configuration trained without prompts "
                        "beside it when there is one, else of the prompted model itself)")
    p.add_argument("--prompt-provenance", choices=PROVENANCES, default=None,
                   help="where a mask folder's masks come from (default user; a folder samunet_predict wrote "
                        "passes its own on: model, or ground_truth when it was prompted from references); "
                        "recorded in prediction_info.json and shown by samunet_evaluate")
    p.add_argument("--box-growth", type=non_negative_float, default=None, metavar="SHARE",
                   help="boxes derived from masks (a folder, or auto) move each side outwards by SHARE times the "
                        "model's training jitter (default 0.5 for reference and user masks, more for a model's "
                        "masks: see README)")


def checkpoint_file(args):
    return args.chk if args.chk.endswith(".pth") else f"{args.chk}.pth"


def mirroring_sentence(predictor, disabled):
    if predictor.mirroring_axes:
        axes = " and ".join(("rows", "columns")[a] for a in predictor.mirroring_axes)
        where = ("every slice" if predictor.mirror_all_slices else
                 f"slices within {MIRROR_NEIGHBOURS} of predicted foreground, 1 elsewhere")
        return f"test-time mirroring of slice {axes}, as in training ({len(predictor.flips)} passes on {where})"
    if disabled:
        return "test-time mirroring: off (--disable-tta)"
    return "test-time mirroring: none (the model was not trained on mirrored slices)"


def run(args, model_folders, folds, description):
    if args.prompt_provenance and not args.prompts:
        raise SamunetError("--prompt-provenance describes --prompts FOLDER; give the folder")
    if args.box_growth is not None and not args.prompts:
        raise SamunetError("--box-growth shapes boxes derived from --prompts FOLDER or auto; give one")
    device = resolve_device(args.device)

    def load(cls, folders):
        loaded = cls.from_model_folder(folders, folds, checkpoint_file(args), device, args.amp or default_amp(device),
                                       args.checkpoint, args.batch_slices, use_tta=not args.disable_tta)
        loaded.mirror_all_slices = args.tta_all_slices
        return loaded

    predictor = load(PromptedPredictor if args.prompts else SlicePredictor, model_folders)
    prompts = None
    if args.prompts:
        prompts = prompt_source(args.prompts, predictor.plan, predictor.dataset_json["file_ending"],
                                args.prompt_provenance, args.box_growth)
    print(f"model: {description}")
    if prompts is not None and prompts.record["source"] == "auto":
        first_pass_folder = prompt_free_counterpart(model_folders[0], folds, checkpoint_file(args))
        if first_pass_folder is not None:
            prompts.use_first_pass(load(SlicePredictor, [first_pass_folder]), str(first_pass_folder))
        print(f"auto's first pass: {prompts.record['first_pass']}")
    mirrored_by = predictor if prompts is None else prompts.first_pass_predictor(predictor)
    if mirrored_by is not None:
        print(mirroring_sentence(mirrored_by, args.disable_tta))
    if prompts is not None:
        print(f"prompts: {args.prompts} (provenance {prompts.provenance}); prompted passes do not mirror")
        if prompts.record.get("largest_piece_labels"):
            print("boxes from the model's masks surround only the largest piece of label(s) "
                  f"{', '.join(map(str, prompts.record['largest_piece_labels']))} (the plan's single_component_labels)")
    written, failures = predict_folder(predictor, args.i, args.o, args.continue_prediction, args.save_probabilities,
                                       args.npp, args.nps, description, args.overwrite, prompts)
    print(f"wrote {len(written)} case(s) to {args.o}")
    if failures:
        raise SamunetError(f"{len(failures)} case(s) failed (listed above); the others were written")


@cli_entry
def main(argv=None):
    p = argparse.ArgumentParser(description="Predict a folder of volumes with trained samunet models.")
    add_common_arguments(p)
    p.add_argument("-d", default=None, help="dataset id (default: the one trained dataset)")
    p.add_argument("-s", "--strategy", nargs="+", default=None, help="strategy (several: their ensemble)")
    p.add_argument("-b", "--backbone", default=None)
    args = p.parse_args(argv)
    model_folders, folds, description = resolve_model(args.d, args.strategy, args.backbone, args.f, checkpoint_file(args),
                                                      prompted=args.prompts is not None)
    run(args, model_folders, folds, description)


@cli_entry
def main_from_modelfolder(argv=None):
    p = argparse.ArgumentParser(description="Predict with the model in a results subfolder (<strategy>__<backbone>).")
    add_common_arguments(p)
    p.add_argument("-m", required=True, help="results subfolder, e.g. $SAMUNET_RESULTS/Dataset501_X/lora_both__litemedsam")
    args = p.parse_args(argv)
    folder = Path(args.m)
    if not (folder / PLANS_FILE).is_file():
        raise SamunetError(f"{folder}: not a samunet model folder (no samunet_plans.json)")
    chk = checkpoint_file(args)
    folds = args.f or trained_folds(folder, chk)
    if not folds:
        raise SamunetError(f"{folder}: no fold holds {chk}")
    run(args, [folder], folds, f"{folder}, folds {' '.join(folds)}")
