"""On-disk cache of image-encoder outputs for strategies whose encoder is frozen.

Embeddings of every slice are computed once (no augmentation: see README) and stored in fp16 as
`{case}.npy` (S, C, h, w), or (S, channels, C, h, w) when the plan encodes channels separately,
memory-mapped when read. The folder name carries a hash of everything the
embeddings depend on (backbone and its base weights, input size, the plan's preprocessing and intensity
mapping, the encoder's precision, a pretrained encoder's hash), so the cache is shared by epochs, folds and strategies of one
backbone + plan, and a change of either gets a fresh folder. Each case also records the stamp of the
preprocessed case it was made from (synthetic cases, from their own folder, included). Mirrored slices (for training that mirrors, --cache-mirroring) are
encoded separately (a mirrored image's embedding is not the mirrored embedding: the encoder has position
embeddings) into `mirror_0/`, `mirror_1/` and `mirror_01/` (slice rows, columns, both).
"""
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from samunet.errors import SamunetError
from samunet.file_io import atomic_write, read_json, remove_temporaries, write_json
from samunet.models.pretrained_encoder import METADATA_KEY as PRETRAINED_KEY
from samunet.models.slice_fusion import neighbour_indices
from samunet.planners.plan_file import PlanView, preprocessing_fields
from samunet.preprocessing.storage import load_properties, open_case

CACHE_FORMAT = 2  # 2: the encoder runs in the amp dtype (models/inference_precision.py)


def cache_folder(preprocessed_folder, plan, metadata, amp):
    key = {
        "format": CACHE_FORMAT,
        "encoder_precision": amp,
        "backbone": metadata["backbone"],
        "base_weights": metadata["base_weights"],
        "input_size": metadata["input_size"],
        "input_normalization": [metadata["input_range"], metadata["pixel_mean"], metadata["pixel_std"]],
        "preprocessing": preprocessing_fields(plan),
        "windows": PlanView(plan).windows,
        "encoder_input": PlanView(plan).encoder_input.cache_fields(),
    }
    if metadata.get(PRETRAINED_KEY):  # an encoder from samunet_pretrain: its own embeddings
        key["pretrained_encoder_sha256"] = metadata[PRETRAINED_KEY]["sha256"]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(preprocessed_folder) / "embedding_cache" / f"{metadata['backbone']}_{digest}"
    return folder, key


class FillExceedsBudget(Exception):
    """The fill, timed on its second chunk, would not end within the time left."""

    def __init__(self, slices, seconds):
        super().__init__(f"{slices} slices, ~{seconds:.0f} s")
        self.slices, self.seconds = slices, seconds


class EmbeddingCache:
    def __init__(self, preprocessed_folder, data_folder, plan, metadata, amp, other_folders=None):
        self.folder, self.key = cache_folder(preprocessed_folder, plan, metadata, amp)
        self.data_folder = data_folder
        self.other_folders = other_folders or {}  # case id -> folder, for cases kept elsewhere (synthetic ones)
        self._arrays = {}

    def _case_folder(self, case_id):
        return self.other_folders.get(case_id, self.data_folder)

    def _folder(self, mirror=()):
        """Where the embeddings of slices flipped along `mirror` (slice axes; () for none) live."""
        return self.folder / f"mirror_{''.join(map(str, mirror))}" if mirror else self.folder

    def files(self, case_id, mirror=()):
        """(embeddings .npy, its .json) of a case in one mirroring."""
        folder = self._folder(mirror)
        return folder / f"{case_id}.npy", folder / f"{case_id}.json"

    def is_current(self, case_id, mirror=()):
        array, info = self.files(case_id, mirror)
        if not (array.is_file() and info.is_file()):
            return False
        try:
            return read_json(info).get("stamp") == load_properties(self._case_folder(case_id), case_id)["stamp"]
        except (SamunetError, AttributeError):
            return False

    @torch.no_grad()
    def fill(self, case_ids, model, mapper, amp_context, batch_size=8, show_progress=True, mirrors=((),),
             seconds_left=None):
        """Compute missing embeddings of every case in each mirroring of `mirrors`. Returns the number of
        slices encoded. `seconds_left` (a callable): after the second chunk, raise FillExceedsBudget when
        the rest of the fill would not end in the time it returns (cases finished by then stay cached)."""
        todo = {c: [m for m in mirrors if not self.is_current(c, m)] for c in case_ids}
        todo = {c: m for c, m in todo.items() if m}
        if not todo:
            return 0
        self.folder.mkdir(parents=True, exist_ok=True)
        for mirror in mirrors:  # the caller holds the dataset's lock
            remove_temporaries(self._folder(mirror))
        write_json(self.key, self.folder / "cache_key.json")
        total = sum(load_properties(self._case_folder(c), c)["shape_after_resampling"][0] * len(m) for c, m in todo.items())
        model.eval()
        bar = tqdm(total=total, desc=f"caching embeddings ({self.folder.name})", disable=not show_progress, leave=False)
        began, encoded, timed = time.perf_counter(), 0, None
        for case_id, case_mirrors in todo.items():
            data, _, props = open_case(self._case_folder(case_id), case_id)
            data = data[...]
            for mirror in case_mirrors:
                flipped = np.flip(data, axis=tuple(a + 2 for a in mirror))  # (C, S, H, W): slice axes are 2, 3
                chunks = []
                for first in range(0, data.shape[1], batch_size):
                    stop = min(first + batch_size, data.shape[1])
                    images = mapper.images([mapper.planes(flipped, s) for s in range(first, stop)])
                    with amp_context():
                        chunks.append(model.encode(images).float().cpu().numpy().astype(np.float16))
                    bar.update(images.shape[0])
                    encoded += images.shape[0]
                    if encoded == images.shape[0]:
                        first_done = time.perf_counter()
                    elif seconds_left is not None and timed is None:  # the second chunk times the rest (the first warms up)
                        timed = (time.perf_counter() - first_done) / images.shape[0] * (total - encoded)
                        if timed > seconds_left():
                            bar.close()
                            raise FillExceedsBudget(total, time.perf_counter() - began + timed)
                array_path, info_path = self.files(case_id, mirror)
                array = np.concatenate(chunks)
                with atomic_write(array_path, lambda tmp: self._check(tmp, array.shape)) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, array)
                write_json({"stamp": props["stamp"]}, info_path)
                self._arrays.pop((case_id, mirror), None)
        bar.close()
        return total

    @staticmethod
    def _check(path, shape):
        try:
            ok = np.load(path, mmap_mode="r").shape == shape
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise SamunetError(f"{path}: written incompletely")

    def embeddings(self, specs, device, mirrors=None, fused_slices=0):
        """(B, C, h, w) float tensor for a list of SliceSpec, each in its mirroring of `mirrors` (default:
        none), (B, channels, C, h, w) for channels encoded separately; with each slice's neighbours for
        `fused_slices` f > 0 (edges replicated): (B, (2f + 1) * views, C, h, w), slice-major."""
        out = []
        for spec, mirror in zip(specs, mirrors or [()] * len(specs)):
            key = (spec.case_id, mirror)
            if key not in self._arrays:
                self._arrays[key] = np.load(self.files(*key)[0], mmap_mode="r")
            array = self._arrays[key]
            if fused_slices:  # (2f + 1, [views,] C, h, w) -> slice-major views
                rows = neighbour_indices(spec.slice_index, fused_slices, len(array))
                rows = np.asarray(array[rows], dtype=np.float32)
                out.append(rows.reshape(-1, *array.shape[-3:]) if array.ndim == 5 else rows)
            else:
                out.append(np.asarray(array[spec.slice_index], dtype=np.float32))
        return torch.from_numpy(np.stack(out)).to(device)
