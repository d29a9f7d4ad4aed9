"""Folders of images named as nnU-Net names them, {case}_{XXXX}{file_ending} with every channel present:
prediction inputs, and the unlabelled images pretraining reads."""
import re
from pathlib import Path

from samunet.errors import SamunetError


def find_image_cases(folder, num_channels, file_ending):
    """{case id: [one path per channel]}; one-line errors for a missing folder, missing channel files, or
    channel files beyond `num_channels` (images of another modality set than the plan's)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SamunetError(f"{folder}: input folder not found")
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [f for f in files if f.endswith(file_ending) and re.fullmatch(r".+_\d{4}", f[: -len(file_ending)])]
    case_ids = sorted({f[: -len(file_ending)][:-5] for f in images})
    if not case_ids:
        raise SamunetError(f"{folder}: no images named {{case}}_0000{file_ending}")
    channels = {int(f[: -len(file_ending)][-4:]) for f in images}
    if max(channels) >= num_channels:
        raise SamunetError(f"{folder}: holds channel file(s) _{max(channels):04d}, but the plan has {num_channels} "
                           "channel(s) per case")
    cases, missing = {}, []
    for case_id in case_ids:
        paths = [folder / f"{case_id}_{c:04d}{file_ending}" for c in range(num_channels)]
        missing += [p.name for p in paths if not p.is_file()]
        cases[case_id] = paths
    if missing:
        raise SamunetError(f"{folder}: missing channel file(s) {', '.join(missing[:6])} ({num_channels} channel(s) per case expected)")
    return cases
