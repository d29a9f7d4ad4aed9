"""Reading samunet_plans.json and splits_final.json, the two files users are invited to edit: every later
stage reads them through here, and a file of the wrong structure stops the command with one line naming
the file and the offending key, instead of a traceback somewhere downstream."""
from samunet.errors import SamunetError
from samunet.file_io import read_json
from samunet.layout import PLANS_FILE
from samunet.models.input_mapping import PROJECTED, SEPARATE, EncoderInput
from samunet.planners.backbone_sizing import CPU_BATCH_SIZE

NORMALIZATION_SCHEMES = ("ct", "zscore", "rgb_to_0_1", "none")


def _integer(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(n, positive=False):
    return lambda v: isinstance(v, list) and len(v) == n and all(_number(x) and (x > 0 or not positive) for x in v)


def _permutation(v):
    return isinstance(v, list) and sorted(v) == [0, 1, 2] and all(_integer(x) for x in v)


def _window(v):
    return _numbers(2)(v) and v[0] < v[1]


def _backbone(v):
    return (isinstance(v, dict) and _integer(v.get("input_size")) and v["input_size"] > 0
            and _window(v.get("input_range")) and _numbers(3)(v.get("pixel_mean"))
            and _numbers(3, positive=True)(v.get("pixel_std")) and _integer(v.get("batch_size")) and v["batch_size"] >= 1
            and _integer(v.get("cpu_batch_size", 1)) and v.get("cpu_batch_size", 1) >= 1)


# key path -> (check, what the value must be)
PLAN_CHECKS = {
    "data_identifier": (lambda v: isinstance(v, str) and v.isidentifier(), "a folder name"),
    "labels": (lambda v: isinstance(v, dict) and v and all(_integer(x) and x >= 0 for x in v.values()),
               "an object mapping class names to integer label values"),
    "channel_names": (lambda v: isinstance(v, dict) and v and all(k.isdigit() for k in v), "an object {\"0\": name, ...}"),
    "slicing_axis": (lambda v: v in (0, 1, 2) and _integer(v), "0, 1 or 2"),
    "transpose_forward": (_permutation, "a permutation of [0, 1, 2]"),
    "transpose_backward": (_permutation, "a permutation of [0, 1, 2]"),
    "target_spacing_3d": (_numbers(3, positive=True), "3 positive numbers"),
    "in_plane_spacing_transposed": (_numbers(2, positive=True), "2 positive numbers"),
    "normalization": (lambda v: isinstance(v, list) and v and all(isinstance(n, dict) and n.get("scheme") in
                                                                     NORMALIZATION_SCHEMES for n in v),
                      f"a list with one {{\"scheme\": ...}} per channel ({', '.join(NORMALIZATION_SCHEMES)})"),
    "intensity_mapping.window_per_channel": (lambda v: isinstance(v, list) and v and all(_window(w) for w in v),
                                             "a list of [lo, hi] with lo < hi, one per channel"),
    "backbones": (lambda v: isinstance(v, dict) and v and all(_backbone(b) for b in v.values()),
                  "an object of backbones, each with integer input_size and batch_size (and cpu_batch_size), "
                  "input_range [lo, hi], "
                  "3-number pixel_mean and positive pixel_std"),
    "default_backbone": (lambda v: isinstance(v, str), "a backbone name"),
}


def _lookup(data, dotted):
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return KeyError
        data = data[key]
    return data


def _check_encoder_input(plan, path):
    """The optional `encoder_input` (plans before it mean: no context, the default projection)."""
    entry = plan.get("encoder_input")
    if entry is None:
        return
    if not isinstance(entry, dict):
        raise SamunetError(f"{path}: 'encoder_input' must be an object, not {entry!r:.80}")
    encoding = entry.get("channel_encoding", PROJECTED)
    if encoding not in (PROJECTED, SEPARATE):
        raise SamunetError(f"{path}: 'encoder_input.channel_encoding' must be '{PROJECTED}' or '{SEPARATE}', "
                           f"not {encoding!r:.80}")
    n = entry.get("context_slices")
    if not (_integer(n) and n >= 0):
        raise SamunetError(f"{path}: 'encoder_input.context_slices' must be an integer >= 0, not {n!r:.80}")
    rows = entry.get("projection")
    if encoding == SEPARATE:
        if n or rows is not None:
            raise SamunetError(f"{path}: 'encoder_input' encodes channels separately: 'context_slices' must be 0 "
                               "and 'projection' null")
    else:
        planes = len(plan["channel_names"]) * (2 * n + 1)
        if not (isinstance(rows, list) and len(rows) == 3 and all(_numbers(planes)(r) and min(r) >= 0 and
                                                                   abs(sum(r) - 1) < 1e-3 for r in rows)):
            raise SamunetError(f"{path}: 'encoder_input.projection' must be 3 rows of {planes} non-negative weights "
                               f"summing to 1 (one per channel and slice of the context), not {rows!r:.80}")
    fused = entry.get("fused_slices", 0)
    if not (_integer(fused) and fused >= 0):
        raise SamunetError(f"{path}: 'encoder_input.fused_slices' must be an integer >= 0, not {fused!r:.80}")


def check_plan(plan, path):
    if not isinstance(plan, dict):
        raise SamunetError(f"{path}: not a samunet plan (a JSON object is expected)")
    for key, (check, expected) in PLAN_CHECKS.items():
        value = _lookup(plan, key)
        if value is KeyError:
            raise SamunetError(f"{path}: key '{key}' is missing")
        if not check(value):
            raise SamunetError(f"{path}: '{key}' must be {expected}, not {value!r:.80}")
    channels = len(plan["channel_names"])
    for key in ("normalization", "intensity_mapping.window_per_channel"):
        if len(_lookup(plan, key)) != channels:
            raise SamunetError(f"{path}: '{key}' must have one entry per channel ({channels})")
    _check_encoder_input(plan, path)
    single = plan.get("single_component_labels", [])
    foreground = {v for v in plan["labels"].values() if v}
    if not (isinstance(single, list) and all(_integer(v) and v in foreground for v in single)):
        raise SamunetError(f"{path}: 'single_component_labels' must be a list of foreground label values "
                           f"({', '.join(map(str, sorted(foreground)))}), not {single!r:.80}")
    if plan["default_backbone"] not in plan["backbones"]:
        raise SamunetError(f"{path}: 'default_backbone' {plan['default_backbone']!r} is not among 'backbones'")
    return plan


def read_plan(path):
    return check_plan(read_json(path), path)


def preprocessing_fields(plan):
    """The parts of a plan that change preprocessed data (a change forces re-preprocessing)."""
    keys = ("transpose_forward", "in_plane_spacing_transposed", "normalization", "labels", "channel_names")
    return {k: plan[k] for k in keys}


class PlanView:
    """Read-only answers to what later stages ask a plan (the plan itself stays a plain dict on disk)."""

    def __init__(self, plan, path=PLANS_FILE):
        self._plan, self.path = plan, path

    @property
    def foreground_labels(self):
        """Sorted foreground label values."""
        return sorted(v for v in self._plan["labels"].values() if v)

    @property
    def class_names(self):
        """Foreground class names in label-value order."""
        return [n for n, v in sorted(self._plan["labels"].items(), key=lambda kv: kv[1]) if v]

    @property
    def class_names_by_value(self):
        return {v: n for n, v in self._plan["labels"].items() if v}

    @property
    def single_component_labels(self):
        """Label values that are one connected piece in the training labels; none in plans from before it."""
        return list(self._plan.get("single_component_labels", []))

    @property
    def windows(self):
        """Per channel [lo, hi] in normalised units, mapped to [0, 1] before the encoder."""
        return self._plan["intensity_mapping"]["window_per_channel"]

    @property
    def encoder_input(self):
        """An EncoderInput (models/input_mapping.py): context slices and the plane-to-channel projection."""
        entry = self._plan.get("encoder_input")
        if entry is None:
            return EncoderInput.default(len(self._plan["channel_names"]))
        rows = entry["projection"]
        return EncoderInput(entry["context_slices"], tuple(map(tuple, rows)) if rows is not None else None,
                            entry.get("channel_encoding", PROJECTED))

    @property
    def channel_views(self):
        """Encoder images per slice: 1, or one per channel when they are encoded separately."""
        return self.encoder_input.views(len(self._plan["channel_names"]))

    @property
    def fused_slices(self):
        """Neighbours each side whose embeddings the head fuses with a slice's (models/slice_fusion.py);
        0 in plans from before it."""
        return (self._plan.get("encoder_input") or {}).get("fused_slices", 0)

    def backbone(self, name):
        """The backbone's entry: input_size, batch_size, input normalisation (a copy)."""
        if name not in self._plan["backbones"]:
            raise SamunetError(f"backbone {name} is not in {self.path}")
        return dict(self._plan["backbones"][name])

    def batch_size(self, name, device_type):
        """The backbone's training batch on this kind of device: `batch_size` (sized for GPU memory) on a GPU,
        `cpu_batch_size` on a CPU (plans from before it: the smaller of batch_size and CPU_BATCH_SIZE)."""
        entry = self.backbone(name)
        if device_type != "cpu":
            return entry["batch_size"]
        return entry.get("cpu_batch_size", min(entry["batch_size"], CPU_BATCH_SIZE))

    def normalization_fields(self, name):
        entry = self.backbone(name)
        return {key: entry[key] for key in ("input_range", "pixel_mean", "pixel_std")}


def read_splits(path):
    """A list of folds, each {"train": [case ids], "val": [case ids]}."""
    splits = read_json(path)
    if not isinstance(splits, list) or not splits:
        raise SamunetError(f"{path}: must be a non-empty list of folds {{\"train\": [...], \"val\": [...]}}")
    for i, fold in enumerate(splits):
        for key in ("train", "val"):
            cases = fold.get(key) if isinstance(fold, dict) else None
            if not isinstance(cases, list) or not cases or not all(isinstance(c, str) for c in cases):
                raise SamunetError(f"{path}: fold {i} key '{key}' must be a non-empty list of case ids")
    return splits
