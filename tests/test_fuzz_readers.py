"""Seeded fuzzing of every annotation reader: each bad input is accepted or is a CellSegError, nothing else.

Small valid inputs (a Kaggle train.csv, a generic RLE CSV, RLE strings, a COCO JSON, a HuBMAP
polygons.jsonl, label images) are mutated with a fixed seed: truncations, dropped, duplicated
and swapped fields, wrong types, negative and huge numbers, reversed runs and binary junk. A
reader may accept the result (the mutation can be harmless) or raise the project's error class
(`cell_seg.errors.CellSegError`, printed by the CLIs as one line); any other exception (a
KeyError, TypeError, IndexError, ...) would reach a user as a traceback and fails the test.
The README's reliability section states the number of cases (FUZZ_CASES).
"""

import copy
import io
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from cell_seg.data import convert, rle
from cell_seg.data.coco import coco_stats, validate_coco
from cell_seg.data.dataset import CocoDataset
from cell_seg.data.split import split_coco
from cell_seg.errors import CellSegError
from cell_seg.files import read_image

SEED = 20261202
# Cases per reader; 640 in all (the README's reliability section quotes this total).
CASES = {"kaggle_csv": 130, "rle_csv": 70, "rle_strings": 100, "coco_json": 150, "polygons_jsonl": 110,
         "label_images": 80}
FUZZ_CASES = sum(CASES.values())
HEIGHT, WIDTH = 6, 8

JUNK_VALUES = ["", " ", "-1", "0", "-7 3", "1e30", "99999999999999999999", "nan", "inf", "abc", "1 2 3",
               "40 3 1 3", "3 0", "1 48", "1 49", "\x00\xff", "é", "1.5 2", "[1, 2]", "null", "{}", ",", '"']
JUNK_JSON = [None, True, -1, 0, 2**70, -(2**70), 1.5, float("nan"), "", "x", [], [None], {}, {"a": 1},
             [1, 2, 3], [[1, 2, 3, 4, 5, 6]], [[-5, -5, 1e9, 1e9, 3, 3]], {"size": [6, 8], "counts": "z@"},
             {"size": [-6, 8], "counts": [1, 2]}, {"size": [6, 8], "counts": [5, -3, 100]}]


def mask_runs(mask, order="row"):
    return rle.encode_rle(mask.astype(np.uint8), order=order)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    """Two 6 x 8 images (gray and RGB) with one label image each."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    gray = (np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH) * 5)
    cv2.imwrite(str(root / "images" / "a.png"), gray)
    cv2.imwrite(str(root / "images" / "b.png"), np.dstack([gray, gray[::-1], gray[:, ::-1]]))
    labels = np.zeros((HEIGHT, WIDTH), np.uint16)
    labels[1:3, 1:4], labels[4:6, 5:8] = 1, 2
    for name in ("a", "b"):
        cv2.imwrite(str(root / "labels" / f"{name}.png"), labels)
    return root


def valid_rles():
    first = np.zeros((HEIGHT, WIDTH), bool)
    first[1:3, 1:4] = True
    second = np.zeros((HEIGHT, WIDTH), bool)
    second[4:6, 5:8] = True
    return first, second


def kaggle_text():
    first, second = valid_rles()
    rows = ["id,annotation,width,height,cell_type,sample_id"]
    for key in ("a", "b"):
        rows.append(f"{key},{mask_runs(first)},{WIDTH},{HEIGHT},astro,s1")
        rows.append(f"{key},{mask_runs(second)},{WIDTH},{HEIGHT},cort,s2")
    return "\n".join(rows) + "\n"


def coco_dict():
    from cell_seg.data.rle import rle_to_coco

    first, second = valid_rles()
    annotations = []
    for image_id in (1, 2):
        for category_id, mask in ((1, first), (2, second)):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "segmentation": rle_to_coco(mask_runs(mask), (HEIGHT, WIDTH), order="row"),
                                "area": int(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0})
    annotations[-1]["segmentation"] = [[5, 4, 7, 4, 7, 5, 5, 5]]  # one polygon
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH, "image_class": "astro"},
                   {"id": 2, "file_name": "b.png", "height": HEIGHT, "width": WIDTH, "image_class": "cort"}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "astro"}, {"id": 2, "name": "cort"}],
    }


def polygons_lines():
    lines = []
    for key in ("a", "b"):
        lines.append({"id": key, "annotations": [
            {"type": "blood_vessel", "coordinates": [[[1, 1], [4, 1], [4, 3], [1, 3]]]},
            {"type": "glomerulus", "coordinates": [[[5, 4], [7, 4], [7, 5], [5, 5]]]},
        ]})
    return lines


# --- mutations ------------------------------------------------------------------------------------


def mutate_text(text, rng):
    """One textual mutation of a CSV/JSONL text."""
    lines = text.splitlines()
    kind = rng.randrange(9)
    if kind == 0:  # truncate anywhere
        return text[: rng.randrange(len(text) + 1)]
    if kind == 1 and len(lines) > 1:  # drop a line (the header too)
        del lines[rng.randrange(len(lines))]
    elif kind == 2:  # duplicate a line
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif kind == 3:  # swap two fields of a line
        i = rng.randrange(len(lines))
        fields = lines[i].split(",")
        a, b = rng.randrange(len(fields)), rng.randrange(len(fields))
        fields[a], fields[b] = fields[b], fields[a]
        lines[i] = ",".join(fields)
    elif kind == 4:  # replace a field with junk
        i = rng.randrange(len(lines))
        fields = lines[i].split(",")
        fields[rng.randrange(len(fields))] = rng.choice(JUNK_VALUES)
        lines[i] = ",".join(fields)
    elif kind == 5:  # drop a field (a short row)
        i = rng.randrange(len(lines))
        fields = lines[i].split(",")
        del fields[rng.randrange(len(fields))]
        lines[i] = ",".join(fields)
    elif kind == 6:  # reverse or negate the runs of a row
        i = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
        fields = lines[i].split(",")
        if len(fields) > 1:
            numbers = fields[1].split()
            fields[1] = " ".join(numbers[::-1] if rng.random() < 0.5 else [f"-{n}" for n in numbers])
        lines[i] = ",".join(fields)
    elif kind == 7:  # binary junk spliced in
        position = rng.randrange(len(text) + 1)
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))).decode("latin-1")
        return text[:position] + junk + text[position:]
    else:  # huge numbers
        return text.replace(str(WIDTH), rng.choice(["80000000000", "-8", "0", "8.5"]), 1)
    return "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")


def mutate_json_value(value, rng, depth=0):
    """A copy of a JSON value with one structural mutation somewhere inside."""
    value = copy.deepcopy(value)
    if depth > 5 or not isinstance(value, (dict, list)) or not value or rng.random() < 0.15:
        return rng.choice(JUNK_JSON)
    if isinstance(value, dict):
        key = rng.choice(sorted(value, key=str))
        action = rng.randrange(4)
        if action == 0:
            del value[key]
        elif action == 1:
            value[key] = rng.choice(JUNK_JSON)
        else:
            value[key] = mutate_json_value(value[key], rng, depth + 1)
        return value
    index = rng.randrange(len(value))
    action = rng.randrange(5)
    if action == 0:
        del value[index]
    elif action == 1:
        value[index] = None
    elif action == 2:
        value.append(copy.deepcopy(value[index]))  # a duplicate (duplicate ids)
    else:
        value[index] = mutate_json_value(value[index], rng, depth + 1)
    return value


def mutate_again(mutate, value, rng, chance):
    """`mutate(value, rng)` with probability `chance`, else `value`: faults stack up sometimes."""
    return mutate(value, rng) if rng.random() < chance else value


def write_bytes_mutated(path, data, rng):
    """Truncated, spliced or junk bytes of a valid file."""
    kind = rng.randrange(3)
    if kind == 0:
        data = data[: rng.randrange(len(data) + 1)]
    elif kind == 1:
        position = rng.randrange(len(data))
        data = data[:position] + bytes(rng.randrange(256) for _ in range(8)) + data[position + 8:]
    else:
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    Path(path).write_bytes(data)


def write_text_mutated(path, text, rng):
    """Write `text` as UTF-8, sometimes with raw invalid bytes (a binary or mis-encoded file) spliced in."""
    data = text.encode("utf-8", "surrogateescape")
    if rng.random() < 0.15:
        position = rng.randrange(len(data) + 1)
        data = data[:position] + rng.choice([b"\xff\xfe", b"\x00", b"\xc3", b"\x89PNG\r\n\x1a\n"]) + data[position:]
    Path(path).write_bytes(data)


def run_case(counter, function, *args, **kwargs):
    """Call a reader; success or CellSegError pass, any other exception fails naming the case."""
    counter["cases"] += 1
    try:
        function(*args, **kwargs)
        counter["accepted"] += 1
    except CellSegError as error:
        assert str(error) and "\n" not in str(error), f"error text must be one line: {error!r}"
        counter["rejected"] += 1


# --- the readers ------------------------------------------------------------------------------------


def test_fuzz_every_reader(fixture_dir, tmp_path):
    rng = random.Random(SEED)
    counter = {"cases": 0, "accepted": 0, "rejected": 0}
    images = fixture_dir / "images"

    base = kaggle_text()
    for case in range(CASES["kaggle_csv"]):
        path = tmp_path / f"kaggle{case}.csv"
        write_text_mutated(path, mutate_again(mutate_text, mutate_text(base, rng), rng, 0.3), rng)
        run_case(counter, convert.convert_kaggle, path, images, skip_bad=rng.random() < 0.3, progress=False)

    generic = base.replace("id,annotation,width,height", "ImageId,EncodedPixels,Width,Height")
    for case in range(CASES["rle_csv"]):
        path = tmp_path / f"rle{case}.csv"
        write_text_mutated(path, mutate_text(generic, rng), rng)
        order = rng.choice(["row", "col"])
        run_case(counter, convert.convert_csv_rle, path, images, order=order, height_col="Height", width_col="Width",
                 class_col=rng.choice([None, "cell_type"]), skip_bad=rng.random() < 0.3, progress=False)

    first, _ = valid_rles()
    valid = mask_runs(first)
    for case in range(CASES["rle_strings"]):
        text = mutate_text("x," + valid, rng).split(",")[-1].strip()
        shape = rng.choice([(HEIGHT, WIDTH), (0, 0), (1, 1), (HEIGHT, -WIDTH), (3, 100)])
        run_case(counter, rle.decode_rle, text, shape, order=rng.choice(["row", "col"]))

    base_coco = coco_dict()
    for case in range(CASES["coco_json"]):
        path = tmp_path / f"coco{case}.json"
        mutated = mutate_again(mutate_json_value, mutate_json_value(base_coco, rng), rng, 0.5)
        write_text_mutated(path, mutate_again(mutate_text, json.dumps(mutated), rng, 0.15), rng)

        def read_coco(path=path):
            dataset = CocoDataset(path, images)
            for image_id in dataset.image_ids:
                dataset.load_labels(image_id)
                dataset.load_image(image_id)
                dataset.image_class(image_id)
            coco = validate_coco(json.loads(path.read_text()), path)
            coco_stats(coco)
            split_coco(coco, 0.5, seed=0)

        run_case(counter, read_coco)

    lines = polygons_lines()
    for case in range(CASES["polygons_jsonl"]):
        path = tmp_path / f"polygons{case}.jsonl"
        chosen = [mutate_again(mutate_json_value, line, rng, 0.6) for line in lines]
        text = "\n".join(json.dumps(line) for line in chosen) + "\n"
        write_text_mutated(path, mutate_again(mutate_text, text, rng, 0.3), rng)
        run_case(counter, convert.convert_polygons, path, images, skip_bad=rng.random() < 0.3, progress=False)

    valid_png = (fixture_dir / "labels" / "a.png").read_bytes()
    for case in range(CASES["label_images"]):
        folder = tmp_path / f"labels{case}"
        folder.mkdir()
        (folder / "b.png").write_bytes(valid_png)
        kind = rng.randrange(4)
        if kind == 0:
            write_bytes_mutated(folder / "a.png", valid_png, rng)
        else:  # decodable images of the wrong kind: size, channels, dtype, sign
            shape = rng.choice([(HEIGHT, WIDTH), (WIDTH, HEIGHT), (1, 1), (HEIGHT, WIDTH, 3), (HEIGHT, WIDTH, 4)])
            dtype = rng.choice([np.uint8, np.uint16, np.int16, np.int32, np.float32])
            array = np.random.default_rng(case).integers(-3, 5, size=shape).astype(dtype)
            if dtype == np.float32 and rng.random() < 0.5:
                array = array + 0.5
            import tifffile

            suffix = ".png" if dtype in (np.uint8, np.uint16) and kind == 1 else ".tif"
            if suffix == ".tif":
                buffer = io.BytesIO()
                tifffile.imwrite(buffer, array)
                (folder / "a.tif").write_bytes(buffer.getvalue())
            else:
                cv2.imwrite(str(folder / "a.png"), array)
        run_case(counter, convert.convert_labels, images, folder, skip_bad=rng.random() < 0.3, progress=False)
        for path in sorted(folder.iterdir()):
            run_case(counter, read_image, path)

    assert counter["cases"] >= FUZZ_CASES >= 500
    # Both outcomes occur: the mutations are neither all harmless nor all fatal.
    assert counter["accepted"] > 50 and counter["rejected"] > 200, counter
