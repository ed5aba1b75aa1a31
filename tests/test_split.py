"""Train/val and k-fold splits of COCO dicts (cell_seg.data.split) and `python -m cell_seg.split`."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import REPO_ROOT

import cell_seg.cli.split as split_cli
from cell_seg.data.coco import subset_coco
from cell_seg.data.split import class_counts, kfold_coco, split_coco
from cell_seg.errors import DataError

CLASSES = ["astro"] * 20 + ["cort"] * 12 + ["shsy5y"] * 8


def make_coco(with_groups=True):
    """40 images of 3 classes, 2 annotations each; images of the same class come in plates of 3."""
    images, annotations = [], []
    for i, image_class in enumerate(CLASSES, start=1):
        image = {"id": i, "key": f"img{i:02d}", "file_name": f"img{i:02d}.png", "width": 8, "height": 8,
                 "image_class": image_class}
        if with_groups and i % 5:  # every fifth image has no plate: a group of its own
            image["sample_id"] = f"{image_class}-plate{(i - 1) // 3}"
        images.append(image)
        for _ in range(2):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 1,
                                "segmentation": {"size": [8, 8], "counts": "01700000000000000"}})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cell"}], "info": {"x": 1}}


def ids(coco):
    return sorted(image["id"] for image in coco["images"])


def test_split_is_stratified_and_complete():
    coco = make_coco(with_groups=False)
    train, val = split_coco(coco, val_fraction=0.25, seed=3)
    assert class_counts(val) == {"astro": 5, "cort": 3, "shsy5y": 2}
    assert class_counts(train) == {"astro": 15, "cort": 9, "shsy5y": 6}
    assert sorted(ids(train) + ids(val)) == list(range(1, 41))
    assert len(val["annotations"]) == 2 * len(val["images"])
    assert {a["image_id"] for a in val["annotations"]} == set(ids(val))
    assert train["categories"] == coco["categories"] and val["info"] == {"x": 1}


def test_split_keeps_groups_together():
    coco = make_coco()
    for seed in range(5):
        train, val = split_coco(coco, 0.2, seed=seed, group="sample_id")
        train_groups = {i.get("sample_id") for i in train["images"]} - {None}
        val_groups = {i.get("sample_id") for i in val["images"]} - {None}
        assert not train_groups & val_groups
        assert 5 <= len(val["images"]) <= 11  # target 8, reached up to one group of 3
        assert set(class_counts(val)) == {"astro", "cort", "shsy5y"}


def test_split_is_reproducible_and_seeded():
    coco = make_coco()
    first = split_coco(coco, 0.2, seed=7, group="sample_id")
    again = split_coco(json.loads(json.dumps(coco)), 0.2, seed=7, group="sample_id")
    assert ids(first[1]) == ids(again[1])
    others = {tuple(ids(split_coco(coco, 0.2, seed=seed, group="sample_id")[1])) for seed in range(8)}
    assert len(others) > 1


def test_split_without_stratification_and_bad_fields():
    coco = make_coco()
    train, val = split_coco(coco, 0.5, seed=0, stratify=None)
    assert len(val["images"]) == 20
    with pytest.raises(DataError, match="no image has this field"):
        split_coco(coco, 0.2, group="plate")
    with pytest.raises(DataError, match="no image has this field"):
        split_coco(coco, 0.2, stratify="tissue")
    with pytest.raises(ValueError):
        split_coco(coco, 1.5)


@pytest.mark.parametrize("group", [None, "sample_id"])
def test_kfold_covers_every_image_once(group):
    coco = make_coco()
    folds = kfold_coco(coco, k=4, seed=1, group=group)
    assert len(folds) == 4
    val_ids = [i for _, val in folds for i in ids(val)]
    assert sorted(val_ids) == list(range(1, 41))
    for train, val in folds:
        assert not set(ids(train)) & set(ids(val))
        assert len(ids(train)) + len(ids(val)) == 40
        if group:
            groups = lambda c: {i.get(group) for i in c["images"]} - {None}  # noqa: E731
            assert not groups(train) & groups(val)
    sizes = [len(val["images"]) for _, val in folds]
    assert max(sizes) - min(sizes) <= (3 if group else 1)
    if group is None:
        per_class = [class_counts(val) for _, val in folds]
        assert all(counts["astro"] == 5 and counts["shsy5y"] == 2 for counts in per_class)
    assert [ids(v) for _, v in kfold_coco(coco, k=4, seed=1, group=group)] == [ids(v) for _, v in folds]
    with pytest.raises(ValueError):
        kfold_coco(coco, k=1)


def test_mixed_class_group_follows_its_majority():
    coco = make_coco(with_groups=False)
    for image in coco["images"][:4]:  # three astro images and one cort image share a plate
        image["sample_id"] = "shared"
    coco["images"][3]["image_class"] = "cort"
    train, val = split_coco(coco, 0.3, seed=2, group="sample_id")
    sides = [side for side in (train, val) if any(i.get("sample_id") == "shared" for i in side["images"])]
    assert len(sides) == 1 and sum(i.get("sample_id") == "shared" for i in sides[0]["images"]) == 4


def test_subset_and_class_counts():
    coco = make_coco()
    part = subset_coco(coco, [1, 40])
    assert ids(part) == [1, 40] and len(part["annotations"]) == 4
    assert class_counts(part) == {"astro": 1, "shsy5y": 1}
    assert Counter(class_counts(coco)) == Counter({"astro": 20, "cort": 12, "shsy5y": 8})


def test_cli_split_and_folds(tmp_path, capsys):
    source = tmp_path / "coco.json"
    source.write_text(json.dumps(make_coco()))
    assert split_cli.main(["--coco", str(source), "--out", str(tmp_path / "s"), "--val", "0.25", "--seed", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"wrote {tmp_path / 's' / 'train.json'}: ") and "(astro " in out[0]
    assert out[1].startswith(f"wrote {tmp_path / 's' / 'val.json'}: ") and "instances" in out[1]
    train = json.loads((tmp_path / "s" / "train.json").read_text())
    val = json.loads((tmp_path / "s" / "val.json").read_text())
    assert len(train["images"]) + len(val["images"]) == 40
    assert split_cli.main(["--coco", str(source), "--out", str(tmp_path / "f"), "--folds", "3", "--group", "sample_id"]) == 0
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert names == [f"fold{k}_{side}.json" for k in range(3) for side in ("train", "val")]
    held_out = [i["id"] for k in range(3) for i in json.loads((tmp_path / "f" / f"fold{k}_val.json").read_text())["images"]]
    assert sorted(held_out) == list(range(1, 41))


def test_cli_split_plain_coco_and_errors(tmp_path, capsys):
    plain = make_coco(with_groups=False)
    for image in plain["images"]:
        del image["image_class"]
    source = tmp_path / "plain.json"
    source.write_text(json.dumps(plain))
    assert split_cli.main(["--coco", str(source), "--out", str(tmp_path / "p")]) == 0
    assert "without stratification" in capsys.readouterr().out
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cell_seg.split", "--coco", str(source), "--out", str(tmp_path / "q"), "--group", "plate"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {source}, field plate: no image has this field (change or drop --group)"
    assert not (tmp_path / "q").exists()
    with pytest.raises(SystemExit) as caught:
        split_cli.main(["--coco", str(source), "--out", str(tmp_path / "r"), "--val", "1.5"])
    assert caught.value.code == 2


def test_bench_folds_add_half_the_validation_to_training_and_keep_groups_whole(tmp_path):
    """bench.folds: training + half A, half A and half B partition the images; a plate never straddles."""
    from bench.folds import halves
    from cell_seg.config import load_config

    coco = make_coco()
    for image in coco["images"]:
        image["source"] = image.get("sample_id")
    (tmp_path / "all.json").write_text(json.dumps(coco))
    config = load_config(REPO_ROOT / "configs" / "demo.yaml",
                         [f"data.coco={tmp_path / 'all.json'}", f"data.images={tmp_path}", "data.split_group=sample_id"])
    merged, half_a, half_b = halves(config)
    train = [i for i in ids(merged) if i not in ids(half_a)]
    assert ids(half_a) and ids(half_b) and not set(ids(half_a)) & set(ids(half_b))
    assert sorted(train + ids(half_a) + ids(half_b)) == ids(coco)
    side = {}
    for name, part in (("train", train), ("a", ids(half_a)), ("b", ids(half_b))):
        for image in coco["images"]:
            if image["id"] in part and image.get("source"):
                assert side.setdefault(image["source"], name) == name
    assert len(merged["annotations"]) == 2 * len(merged["images"])
