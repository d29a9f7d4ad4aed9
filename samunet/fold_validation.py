"""A trained fold's final validation: its validation cases predicted in 3D as samunet_predict predicts them
(mirroring along the axes training mirrored; a prompted model prompted from the reference labels, as
`--prompts <labels folder>` would prompt it), written with their probabilities to fold_F/validation/, and
evaluated against the reference labels in mm -> validation/summary.json. samunet_train runs it after
training (samunet/run_training.py); `samunet_train ... --val` runs it alone. It joins the inference and
evaluation stages, so it sits above them, as plan_and_preprocess.py joins planning and preprocessing."""
import copy

from tqdm import tqdm

from samunet.errors import SamunetError
from samunet.evaluation.evaluate_cli import evaluate_folders
from samunet.file_io import read_json, write_json
from samunet.inference.predictor import SlicePredictor
from samunet.inference.prompt_sources import MaskFolderPrompts
from samunet.inference.prompted_predictor import PromptedPredictor
from samunet.inference.write_prediction import restore_and_write
from samunet.layout import GT_FOLDER, PLANS_FILE, VALIDATION_FOLDER
from samunet.models.build import PROMPTS_KEY
from samunet.planners.plan_file import PlanView, read_plan
from samunet.preprocessing.storage import load_case


def validate_fold(model, preprocessed_folder, val_cases, fold_folder, device, amp, batch_slices,
                  show_progress=True, log=print):
    plan = read_plan(preprocessed_folder / PLANS_FILE)
    dataset_json = read_json(preprocessed_folder / "dataset.json")
    data_folder = preprocessed_folder / plan["data_identifier"]
    gt_folder = preprocessed_folder / GT_FOLDER
    if not gt_folder.is_dir():
        raise SamunetError(f"{gt_folder}: missing; run samunet_preprocess again to create it")
    ending = dataset_json["file_ending"]
    prompted = bool(model.metadata.get(PROMPTS_KEY))
    # A copy: the predictor turns its models into inference models (models/inference_precision.py).
    cls = PromptedPredictor if prompted else SlicePredictor
    predictor = cls([copy.deepcopy(model)], plan, dataset_json, device, amp, batch_slices)
    prompts = MaskFolderPrompts(gt_folder, ending, "ground_truth") if prompted else None
    out = fold_folder / VALIDATION_FOLDER
    for case_id in tqdm(val_cases, desc="validation (3D)", disable=not show_progress, leave=False):
        data, _, properties = load_case(data_folder, case_id)
        if prompts is None:
            probs = predictor.predict_preprocessed(data)
        else:
            probs = prompts.predict(predictor, case_id, data, properties)
        restore_and_write(case_id, probs, properties, out, ending, save_probabilities=True)
    labels = PlanView(plan).foreground_labels
    summary = evaluate_folders(gt_folder, out, labels, num_processes=1, cases=[f"{c}{ending}" for c in val_cases],
                               provenance=prompts.provenance if prompts else "none")
    summary["class_names"] = {str(v): n for v, n in PlanView(plan).class_names_by_value.items()}
    summary["mirroring_axes"] = [] if prompts else predictor.mirroring_axes
    write_json(summary, out / "summary.json")
    log(f"validation (3D, {len(val_cases)} cases, prompts: {summary['prompt_provenance']}): mean foreground Dice "
        f"{summary['foreground_mean']['Dice']:.4f}, HD95 {summary['foreground_mean']['HD95']:.2f} mm")
    return summary
