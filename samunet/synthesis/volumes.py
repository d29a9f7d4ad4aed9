"""What synthesis methods take and return: preprocessed volumes (C, S, H, W) with their voxel spacing."""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Volume:
    case_id: str
    image: np.ndarray  # float32 (C, S, H, W), preprocessed
    spacing: tuple  # (S, H, W) axes, mm
    seg: np.ndarray = None  # (S, H, W) label map: exemplars only


@dataclass
class SyntheticCase:
    seg: np.ndarray  # (S, H, W) label map on the returned image
    quality: float  # 0..1, higher is more trustworthy (see each method)
    image: np.ndarray = None  # (C, S, H, W); None: the target's own image, unchanged
    details: dict = field(default_factory=dict)  # method-specific numbers, written to the case's properties

