"""On-disk cache of image-encoder outputs for strategies whose encoder is frozen.

Embeddings of every slice are computed once (no augmentation: see README) and stored in fp16 as
`{case}.npy` (S, C, h, w), memory-mapped when read. The folder name carries a hash of everything the
embeddings depend on (backbone and its base weights, input size, the plan's preprocessing and intensity
mapping, the encoder's precision), so the cache is shared by epochs, folds and strategies of one
backbone + plan, and a change of either gets a fresh folder. Each case also records the stamp of the
preprocessed case it was made from.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from samunet.file_io import read_json, write_json
from samunet.planners.experiment_planner import preprocessing_fields
from samunet.preprocessing.storage import load_properties, open_case

CACHE_FORMAT = 2  # 2: the encoder runs in the amp dtype (models/inference_precision.py)


def cache_folder(preprocessed_folder, plan, metadata, amp):
    key = {
        "format": CACHE_FORMAT,
        "encoder_precision": amp,
        "backbone": metadata["backbone"],
        "base_weights": metadata["base_weights"],
        "input_size": metadata["input_size"],
        "preprocessing": preprocessing_fields(plan),
        "windows": plan["intensity_mapping"]["window_per_channel"],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(preprocessed_folder) / "embedding_cache" / f"{metadata['backbone']}_{digest}"
    return folder, key


class EmbeddingCache:
    def __init__(self, preprocessed_folder, data_folder, plan, metadata, amp):
        self.folder, self.key = cache_folder(preprocessed_folder, plan, metadata, amp)
        self.data_folder = data_folder
        self._arrays = {}

    def _files(self, case_id):
        return self.folder / f"{case_id}.npy", self.folder / f"{case_id}.json"

    def is_current(self, case_id):
        array, info = self._files(case_id)
        if not (array.is_file() and info.is_file()):
            return False
        return read_json(info).get("stamp") == load_properties(self.data_folder, case_id)["stamp"]

    @torch.no_grad()
    def fill(self, case_ids, model, mapper, amp_context, batch_size=8, show_progress=True):
        """Compute missing embeddings. Returns the number of slices encoded."""
        todo = [c for c in case_ids if not self.is_current(c)]
        if not todo:
            return 0
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.key, self.folder / "cache_key.json")
        total = sum(load_properties(self.data_folder, c)["shape_after_resampling"][0] for c in todo)
        model.eval()
        bar = tqdm(total=total, desc=f"caching embeddings ({self.folder.name})", disable=not show_progress, leave=False)
        for case_id in todo:
            data, _, props = open_case(self.data_folder, case_id)
            data = data[...]
            chunks = []
            for start in range(0, data.shape[1], batch_size):
                images = mapper.images([data[:, s] for s in range(start, min(start + batch_size, data.shape[1]))])
                with amp_context():
                    chunks.append(model.encode(images).float().cpu().numpy().astype(np.float16))
                bar.update(images.shape[0])
            array_path, info_path = self._files(case_id)
            tmp = array_path.with_name(f".{case_id}.npy")
            with open(tmp, "wb") as f:
                np.save(f, np.concatenate(chunks))
            os.replace(tmp, array_path)
            write_json({"stamp": props["stamp"]}, info_path)
            self._arrays.pop(case_id, None)
        bar.close()
        return total

    def embeddings(self, specs, device):
        """(B, C, h, w) float tensor for a list of SliceSpec."""
        out = []
        for spec in specs:
            if spec.case_id not in self._arrays:
                self._arrays[spec.case_id] = np.load(self._files(spec.case_id)[0], mmap_mode="r")
            out.append(np.asarray(self._arrays[spec.case_id][spec.slice_index], dtype=np.float32))
        return torch.from_numpy(np.stack(out)).to(device)
