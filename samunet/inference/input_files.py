"""Finding prediction inputs named as nnU-Net names them: {case}_{XXXX}{file_ending}, every channel required."""
from pathlib import Path

from samunet.errors import SamunetError


def find_input_cases(folder, num_channels, file_ending):
    folder = Path(folder)
    if not folder.is_dir():
        raise SamunetError(f"{folder}: input folder not found")
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [f for f in files if f.endswith(file_ending)]
    case_ids = sorted({f[: -len(file_ending)][:-5] for f in images})
    if not case_ids:
        raise SamunetError(f"{folder}: no images named {{case}}_0000{file_ending}")
    cases, missing = {}, []
    for case_id in case_ids:
        paths = [folder / f"{case_id}_{c:04d}{file_ending}" for c in range(num_channels)]
        absent = [p.name for p in paths if not p.is_file()]
        missing += absent
        cases[case_id] = paths
    if missing:
        raise SamunetError(f"{folder}: missing channel file(s) {', '.join(missing[:6])} ({num_channels} channel(s) per case expected)")
    return cases
