"""Imports point one way: a stage never imports a later one (README "Folders and stages")."""
import ast
from pathlib import Path

import samunet

# Shared modules (errors, I/O, paths, layout, cropping) and models/ are below every stage.
ORDER = {"models": 0, "dataset_conversion": 1, "planners": 2, "preprocessing": 3, "prompts": 4, "synthesis": 4,
         "trainers": 5, "pretraining": 5, "inference": 6, "postprocessing": 7, "evaluation": 8}
COMPOSITIONS = {"plan_and_preprocess", "run_training", "fold_validation", "demo"}  # join stages: above them all


def imports(package_root):
    for path in package_root.rglob("*.py"):
        parts = path.relative_to(package_root).with_suffix("").parts
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("samunet."):
                yield parts[0], "/".join(parts), node.module.split(".")[1], node.module


def test_no_module_imports_a_later_stage():
    root = Path(samunet.__file__).parent
    upward = [f"{where} imports {module}" for source, where, target, module in imports(root)
              if source not in COMPOSITIONS and target != source
              and (target in COMPOSITIONS or ORDER.get(target, -1) > ORDER.get(source, -1))]
    assert upward == []
    assert set(ORDER) <= {p.name for p in root.iterdir() if p.is_dir()}  # the table names real packages
