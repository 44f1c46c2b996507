"""The demo's generated dataset: deterministic, and its VOC and COCO views agree."""

import hashlib
import json
from xml.etree import ElementTree as ET

from resdet.data.synthetic import CLASSES, generate_dataset


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    kw = dict(num_train=6, num_test=2, num_cls_per_class=2, image_size=(96, 128))
    a, b, c = (
        generate_dataset(tmp_path / n, seed=s, **kw) for n, s in (("a", 0), ("b", 0), ("c", 1))
    )
    assert _digest(a["voc"]) == _digest(b["voc"])
    assert _digest(a["voc"]) != _digest(c["voc"])


def test_voc_and_coco_views_agree(tmp_path):
    paths = generate_dataset(
        tmp_path, num_train=8, num_test=3, num_cls_per_class=2, image_size=(96, 128)
    )
    coco = json.loads(paths["coco_train"].read_text())
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    names = (tmp_path / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert len(names) == len(coco["images"]) == 8
    for img in coco["images"]:
        xml = ET.parse(tmp_path / "Annotations" / img["file_name"].replace(".jpg", ".xml"))
        voc = sorted(
            (o.find("name").text, int(o.find("bndbox/xmin").text)) for o in xml.findall("object")
        )
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        ref = sorted((CLASSES[a["category_id"] - 1], int(round(a["bbox"][0])) + 1) for a in anns)
        assert voc == ref
        for a in anns:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x + w <= img["width"] and y + h <= img["height"]
    per_class = {
        c: len(list((paths["classification"] / "train" / c).glob("*.jpg"))) for c in CLASSES
    }
    assert set(per_class.values()) == {2}
