#!/usr/bin/env python
"""DeepPCB (Tang et al. 2019; github.com/tangsanli5201/DeepPCB) → two COCO json files, for
``tools/tkd_pipeline.py --dataset custom`` and the benchmarks' "data it was not tuned on".

DeepPCB: 1,500 binarised 640 × 640 PCB crops (1,000 trainval, 500 test), 3–12 defects each,
6 classes. Its ``PCBData/trainval.txt`` / ``test.txt`` list ``groupG/G/NNN.jpg
groupG/G_not/NNN.txt``; the tested image is ``NNN_test.jpg`` (``NNN_temp.jpg`` is the
defect-free template, not used); an annotation line is ``x1,y1,x2,y2,type`` (commas or
spaces), type 1–6. The json files reference the images in place (``file_name`` relative to
PCBData/), so the images are not copied:

    python benchmarks/data/deeppcb_to_coco.py /path/to/DeepPCB/PCBData /path/to/out
    python tools/tkd_pipeline.py --dataset custom \\
        --train deeppcb_train:coco:/path/to/DeepPCB/PCBData:/path/to/out/trainval.json \\
        --test deeppcb_test:coco:/path/to/DeepPCB/PCBData:/path/to/out/test.json
"""
import argparse
import json
import re
import sys
from pathlib import Path

CLASSES = ["open", "short", "mousebite", "spur", "copper", "pin-hole"]  # type 1..6
SIZE = 640


def read_split(pcb_data: Path, split: str):
    """``[(image path relative to PCBData, annotation path)]`` of ``split`` (trainval / test)."""
    listing = pcb_data / f"{split}.txt"
    if not listing.is_file():
        raise SystemExit(f"{listing}: not found; give the DeepPCB PCBData folder")
    pairs = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise SystemExit(f"{listing}:{number}: expected 'IMAGE ANNOTATION', got {line!r}")
        image, annotation = parts
        pairs.append((image[:-len(".jpg")] + "_test.jpg", pcb_data / annotation))
    return pairs


def read_boxes(path: Path):
    boxes = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        values = re.split(r"[,\s]+", line.strip())
        try:
            x1, y1, x2, y2, kind = (int(float(v)) for v in values)
        except ValueError:
            raise SystemExit(f"{path}:{number}: expected x1,y1,x2,y2,type, got {line!r}") from None
        if not 1 <= kind <= len(CLASSES):
            raise SystemExit(f"{path}:{number}: type {kind} is not 1-{len(CLASSES)}")
        boxes.append((x1, y1, x2, y2, kind))
    return boxes


def to_coco(pcb_data: Path, split: str):
    images, annotations = [], []
    for image_id, (image, annotation) in enumerate(read_split(pcb_data, split), 1):
        if not (pcb_data / image).is_file():
            raise SystemExit(f"{pcb_data / image}: listed in {split}.txt but missing")
        images.append({"id": image_id, "file_name": image, "width": SIZE, "height": SIZE})
        for x1, y1, x2, y2, kind in read_boxes(annotation):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": kind,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})
    categories = [{"id": i, "name": name} for i, name in enumerate(CLASSES, 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pcb_data", type=Path, help="DeepPCB's PCBData folder")
    p.add_argument("output", type=Path, help="where trainval.json and test.json go")
    args = p.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for split in ("trainval", "test"):
        coco = to_coco(args.pcb_data, split)
        (args.output / f"{split}.json").write_text(json.dumps(coco))
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> {args.output / split}.json")


if __name__ == "__main__":
    sys.exit(main())
