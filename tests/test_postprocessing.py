import numpy as np
import pytest

from samunet.connected_components import keep_largest_component, largest_component_share
from samunet.imageio import Geometry, read_image, write_image
from samunet.postprocessing.largest_component import apply_main, determine

GEOMETRY = Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def blobs():
    ref = np.zeros((10, 30, 30), np.uint8)
    ref[2:8, 2:12, 2:12] = 1
    ref[2:8, 18:22, 2:6] = 2   # class 2 has two true components
    ref[2:8, 18:22, 20:24] = 2
    return ref


def test_keep_largest_component_per_class():
    seg = blobs()
    seg[0, 25:27, 25:27] = 1  # a small false positive of class 1
    out = keep_largest_component(seg, [1])
    assert out[0, 25, 25] == 0 and (out == 1).sum() == (blobs() == 1).sum()
    assert np.array_equal(out == 2, seg == 2)  # class 2 untouched
    assert largest_component_share(seg == 1) == pytest.approx((blobs() == 1).sum() / (seg == 1).sum())
    assert largest_component_share(out == 1) == 1.0 and largest_component_share(seg == 3) is None


def test_determine_keeps_the_rule_only_where_it_helps(tmp_path, capsys):
    gt, model = tmp_path / "gt", tmp_path / "conf"
    for i in range(3):
        ref = blobs()
        pred = ref.copy()
        pred[0, 25:28, 25:28] = 1  # spurious class-1 islands: removing them helps
        write_image(ref, GEOMETRY, gt / f"c{i}.nii.gz")
        write_image(pred, GEOMETRY, model / f"fold_{i % 2}" / "validation" / f"c{i}.nii.gz")
    result = determine(model, gt, [1, 2], ".nii.gz")
    assert result["keep_largest_component_for_labels"] == [1]  # for class 2 it would delete a true component
    assert result["dice_after"]["1"] > result["dice_before"]["1"]
    assert result["dice_after"]["2"] == result["dice_before"]["2"] == 1.0
    assert (model / "postprocessing.json").is_file()

    out = tmp_path / "pp"
    apply_main(["-i", str(model / "fold_0" / "validation"), "-o", str(out), "-pp", str(model / "postprocessing.json")])
    seg, geom = read_image(out / "c0.nii.gz")
    assert np.array_equal(seg, blobs()) and geom == read_image(gt / "c0.nii.gz")[1]
    with pytest.raises(SystemExit):
        apply_main(["-i", str(out), "-o", str(out), "-pp", str(model / "postprocessing.json")])
    assert "must differ from the input folder" in capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in gt.iterdir()}
    with pytest.raises(SystemExit):  # onto the reference labels: refused, nothing replaced
        apply_main(["-i", str(model / "fold_0" / "validation"), "-o", str(gt), "-pp", str(model / "postprocessing.json")])
    assert "holds files samunet_apply_postprocessing did not write" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in gt.iterdir()} == before
    apply_main(["-i", str(model / "fold_0" / "validation"), "-o", str(out), "-pp", str(model / "postprocessing.json")])
    with pytest.raises(SystemExit):  # its own folder again is fine; a file that is not a rule is not
        apply_main(["-i", str(model / "fold_0" / "validation"), "-o", str(tmp_path / "q"), "-pp", str(out / "c0.nii.gz")])
    assert "c0.nii.gz: not a text (JSON) file" in capsys.readouterr().err
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(SystemExit):
        apply_main(["-i", str(model / "fold_0" / "validation"), "-o", str(tmp_path / "q"), "-pp", str(tmp_path / "other.json")])
    assert "other.json: not a postprocessing.json" in capsys.readouterr().err
