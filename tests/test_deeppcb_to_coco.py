"""benchmarks/data/deeppcb_to_coco.py on a two-image DeepPCB layout: COCO boxes as x, y, w, h
with types 1-6 as category ids, images referenced in place, bad lines named."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "data" / "deeppcb_to_coco.py"


def _layout(root, annotation="10,20,30,60,2\n100 110 140 130 6\n"):
    group = root / "group00041"
    (group / "00041").mkdir(parents=True)
    (group / "00041_not").mkdir()
    for n in ("00041000", "00041001"):
        (group / "00041" / f"{n}_test.jpg").write_bytes(b"jpg")
        (group / "00041_not" / f"{n}.txt").write_text(annotation)
    line = "group00041/00041/{0}.jpg group00041/00041_not/{0}.txt\n"
    (root / "trainval.txt").write_text(line.format("00041000"))
    (root / "test.txt").write_text(line.format("00041001"))


def _run(src, out):
    return subprocess.run([sys.executable, str(SCRIPT), str(src), str(out)], capture_output=True, text=True)


def test_converts_both_splits(tmp_path):
    _layout(tmp_path / "PCBData")
    proc = _run(tmp_path / "PCBData", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    coco = json.loads((tmp_path / "out" / "trainval.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["group00041/00041/00041000_test.jpg"]
    assert [(a["category_id"], a["bbox"]) for a in coco["annotations"]] == [(2, [10, 20, 20, 40]), (6, [100, 110, 40, 20])]
    assert [c["name"] for c in coco["categories"]] == ["open", "short", "mousebite", "spur", "copper", "pin-hole"]
    test = json.loads((tmp_path / "out" / "test.json").read_text())
    assert [i["file_name"] for i in test["images"]] == ["group00041/00041/00041001_test.jpg"]


def test_a_bad_annotation_line_is_named(tmp_path):
    _layout(tmp_path / "PCBData", annotation="10,20,30,60,9\n")
    proc = _run(tmp_path / "PCBData", tmp_path / "out")
    assert proc.returncode != 0
    assert "00041000.txt:1: type 9 is not 1-6" in proc.stderr
