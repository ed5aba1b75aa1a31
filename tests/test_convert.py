"""Converters to COCO JSON (cell_seg.data.convert) and the `python -m cell_seg.convert` CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO_ROOT, write_png
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import cell_seg.cli.convert as convert_cli
from cell_seg.data import convert
from cell_seg.data.coco import coco_stats
from cell_seg.data.rle import encode_rle
from cell_seg.errors import DataError

SHAPE = (20, 30)


def rect(r0, r1, c0, c1, shape=SHAPE):
    mask = np.zeros(shape, np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def decoded_masks(coco, key):
    """Masks of image `key` in annotation order, decoded by pycocotools."""
    image_id = next(image["id"] for image in coco["images"] if image["key"] == key)
    return [
        mask_utils.decode({**a["segmentation"], "counts": a["segmentation"]["counts"].encode()})
        for a in coco["annotations"]
        if a["image_id"] == image_id
    ]


def gray_image(shape=SHAPE, value=40):
    return np.full(shape, value, np.uint8)


# --- Kaggle train.csv -----------------------------------------------------------------------

KAGGLE_MASKS = {
    "b": [("cort", rect(1, 5, 2, 8)), ("cort", rect(4, 9, 7, 12)), ("cort", rect(15, 20, 25, 30))],
    "a": [("astro", rect(0, 2, 0, 3))],
    "c": [("shsy5y", rect(10, 12, 10, 20))],
}


def write_kaggle(tmp_path, masks=KAGGLE_MASKS, extra_rows=(), sample_ids=None):
    images = tmp_path / "train"
    for key in masks:
        write_png(images / f"{key}.png", gray_image())
    lines = ["id,annotation,width,height,cell_type,plate_time,sample_date,sample_id,elapsed_timedelta"]
    for key, instances in masks.items():
        for cell_type, mask in instances:
            sample = (sample_ids or {}).get(key, "")
            lines.append(f"{key},{encode_rle(mask, 'row')},{SHAPE[1]},{SHAPE[0]},{cell_type},,,{sample},")
    lines += list(extra_rows)
    csv = tmp_path / "train.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv, images


def test_kaggle_converts_masks_classes_and_fields(tmp_path):
    csv, images = write_kaggle(tmp_path, sample_ids={"b": "plate-7"})
    coco, stats = convert.convert_kaggle(csv, images)
    assert [(i["id"], i["key"], i["file_name"]) for i in coco["images"]] == [
        (1, "a", "a.png"), (2, "b", "b.png"), (3, "c", "c.png"),
    ]
    assert [i["image_class"] for i in coco["images"]] == ["astro", "cort", "shsy5y"]
    assert coco["images"][1]["sample_id"] == "plate-7" and "sample_id" not in coco["images"][0]
    assert all(i["width"] == 30 and i["height"] == 20 for i in coco["images"])
    assert [c["name"] for c in coco["categories"]] == ["astro", "cort", "shsy5y"]
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3, 4, 5]
    for key, instances in KAGGLE_MASKS.items():
        got = decoded_masks(coco, key)
        assert len(got) == len(instances)
        for mask, (_, expected) in zip(got, instances):
            np.testing.assert_array_equal(mask, expected)
    second = coco["annotations"][2]
    assert second["category_id"] == 2 and second["area"] == 25 and second["bbox"] == [7.0, 4.0, 5.0, 5.0]
    assert all(isinstance(a["segmentation"]["counts"], str) and a["iscrowd"] == 0 for a in coco["annotations"])
    assert stats.per_class == {"astro": 1, "cort": 3, "shsy5y": 1}
    assert (stats.images, stats.instances, stats.empty_images) == (3, 5, 0)
    assert stats.overlapping_pixels == 1  # rows 4, cols 7 of image b
    assert stats.summary().startswith(
        "3 images, 5 instances (astro 1, cort 3, shsy5y 1), 0 empty images, 1 overlapping pixels"
    )


def test_kaggle_output_loads_in_pycocotools(tmp_path):
    csv, images = write_kaggle(tmp_path)
    out = tmp_path / "coco.json"
    assert convert_cli.main(["kaggle", "--csv", str(csv), "--images", str(images), "--out", str(out), "--quiet"]) == 0
    ground_truth = COCO(str(out))
    annotation = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=[2]))[0]
    np.testing.assert_array_equal(ground_truth.annToMask(annotation), KAGGLE_MASKS["b"][0][1])
    assert coco_stats(json.loads(out.read_text())).overlapping_pixels == 1


def test_kaggle_missing_image(tmp_path):
    csv, images = write_kaggle(tmp_path)
    (images / "c.png").unlink()
    with pytest.raises(DataError) as caught:
        convert.convert_kaggle(csv, images)
    assert caught.value.file == str(csv) and caught.value.row == 6 and caught.value.field == "id"
    assert "'c'" in str(caught.value)


def test_kaggle_corrupt_png(tmp_path):
    csv, images = write_kaggle(tmp_path)
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="cannot decode") as caught:
        convert.convert_kaggle(csv, images)
    assert caught.value.file == str(images / "b.png")
    assert "row 2" in str(caught.value)


@pytest.mark.parametrize(
    "row, field, pattern",
    [
        ("a,1 2 3,30,20,astro,,,,", "annotation", "odd number"),
        ("a,1 x,30,20,astro,,,,", "annotation", "non-integer"),
        ("a,599 5,30,20,astro,,,,", "annotation", "past the end"),
        ("a,1 2,31,20,astro,,,,", "width", "does not match"),
        ("a,1 2,30,abc,astro,,,,", "height", "not an integer"),
        ("a,1 2,30,20,,,,,", "cell_type", "empty class"),
    ],
)
def test_kaggle_bad_rows(tmp_path, row, field, pattern):
    csv, images = write_kaggle(tmp_path, extra_rows=[row])
    with pytest.raises(DataError, match=pattern) as caught:
        convert.convert_kaggle(csv, images)
    assert (caught.value.file, caught.value.row, caught.value.field) == (str(csv), 7, field)


def test_kaggle_missing_column(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("id,annotation,width,height\na,1 2,30,20\n")
    write_png(tmp_path / "train" / "a.png", gray_image())
    with pytest.raises(DataError, match="missing column") as caught:
        convert.convert_kaggle(csv, tmp_path / "train")
    assert caught.value.field == "cell_type"


def test_kaggle_skip_bad_counts_and_lists(tmp_path):
    csv, images = write_kaggle(tmp_path, extra_rows=["b,1 2 3,30,20,cort,,,,"])
    (images / "c.png").write_bytes(b"corrupt")
    coco, stats = convert.convert_kaggle(csv, images, skip_bad=True)
    assert [i["key"] for i in coco["images"]] == ["a", "b"]
    assert (stats.skipped_rows, stats.skipped_images, stats.instances) == (1, 1, 4)
    assert any("row 7" in message for message in stats.skipped)
    assert any("c.png" in message for message in stats.skipped)
    assert "1 skipped rows, 1 skipped images" in stats.summary()


# --- generic RLE CSV ------------------------------------------------------------------------


def test_csv_rle_column_major_with_size_columns(tmp_path):
    images = tmp_path / "imgs"
    write_png(images / "x.png", gray_image())
    write_png(images / "y.png", gray_image())
    masks = [rect(0, 3, 0, 2), rect(10, 20, 28, 30)]
    rows = [f"x,{encode_rle(m, 'col')},20,30,Public" for m in masks] + ["y,,20,30,Private"]
    csv = tmp_path / "solution.csv"
    csv.write_text("ImageId,EncodedPixels,Height,Width,Usage\n" + "\n".join(rows) + "\n")
    coco, stats = convert.convert_csv_rle(
        csv, images, order="col", height_col="Height", width_col="Width", category="nucleus", extra_cols=["Usage"]
    )
    for got, expected in zip(decoded_masks(coco, "x"), masks):
        np.testing.assert_array_equal(got, expected)
    assert (stats.images, stats.instances, stats.empty_images) == (2, 2, 1)
    assert coco["images"][0]["Usage"] == "Public" and coco["images"][0]["image_class"] == "nucleus"
    assert coco["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "cell"}]
    # The same strings read row-major are different masks: the order is never guessed.
    wrong, _ = convert.convert_csv_rle(csv, images, order="row")
    assert not np.array_equal(decoded_masks(wrong, "x")[0], masks[0])


def test_csv_rle_size_from_image_and_class_column(tmp_path):
    images = tmp_path / "imgs"
    write_png(images / "x.png", gray_image())
    csv = tmp_path / "f.csv"
    csv.write_text(f"img,rle,kind\nx,{encode_rle(rect(2, 4, 2, 4), 'row')},round\nx,1 1,flat\nx,1 1,round\n")
    coco, stats = convert.convert_csv_rle(csv, images, order="row", id_col="img", rle_col="rle", class_col="kind")
    assert stats.per_class == {"flat": 1, "round": 2}
    assert coco["images"][0]["image_class"] == "round"
    assert stats.overlapping_pixels == 1


def test_csv_rle_bad_height_column(tmp_path):
    images = tmp_path / "imgs"
    write_png(images / "x.png", gray_image())
    csv = tmp_path / "f.csv"
    csv.write_text("ImageId,EncodedPixels,Height,Width\nx,1 1,21,30\n")
    with pytest.raises(DataError, match="does not match") as caught:
        convert.convert_csv_rle(csv, images, order="col", height_col="Height", width_col="Width")
    assert (caught.value.row, caught.value.field) == (2, "Height")


# --- DSB2018 mask folders -------------------------------------------------------------------


def write_dsb(root, key, image, masks, names=None):
    write_png(root / key / "images" / f"{key}.png", image)
    for i, mask in enumerate(masks):
        write_png(root / key / "masks" / (names[i] if names else f"m{i}.png"), mask)


def test_masks_converter(tmp_path):
    root = tmp_path / "stage1_train"
    rgba = np.dstack([gray_image(value=10)] * 3 + [np.full(SHAPE, 255, np.uint8)])
    first, second = rect(0, 4, 0, 4), rect(10, 20, 20, 30)
    rgba_mask = np.dstack([second * 255] * 3 + [np.full(SHAPE, 255, np.uint8)])
    write_dsb(root, "k1", rgba, [rgba_mask, first * 255, np.zeros(SHAPE, np.uint8)], names=["b.png", "a.png", "c.png"])
    colour = np.dstack([gray_image(value=200), gray_image(value=100), gray_image(value=150)])
    write_dsb(root, "k0", colour, [rect(5, 6, 5, 6) * 255])
    (root / "k2" / "images").mkdir(parents=True)
    write_png(root / "k2" / "images" / "k2.png", gray_image(value=220))  # no masks folder: empty image
    coco, stats = convert.convert_masks(root)
    assert [(i["key"], i["file_name"]) for i in coco["images"]] == [
        ("k0", "k0/images/k0.png"), ("k1", "k1/images/k1.png"), ("k2", "k2/images/k2.png"),
    ]
    assert [i["modality"] for i in coco["images"]] == ["histology", "fluorescence", "brightfield"]
    got = decoded_masks(coco, "k1")  # sorted mask file order: a.png, b.png (c.png is empty)
    assert len(got) == 2
    np.testing.assert_array_equal(got[0], first)
    np.testing.assert_array_equal(got[1], second)
    assert (stats.images, stats.instances, stats.empty_images, stats.empty_masks) == (3, 3, 1, 1)
    assert stats.per_class == {"nucleus": 3} and coco["images"][0]["image_class"] == "nucleus"
    only, _ = convert.convert_masks(root, ids=["k1"])
    assert [i["key"] for i in only["images"]] == ["k1"]


def test_csv_rle_over_several_dsb_folders_equals_the_masks_converter(tmp_path):
    """The DSB2018 label CSV over two image folders gives what `convert masks` gives from the masks."""
    first, second, third = rect(0, 4, 0, 4), rect(10, 20, 20, 30), rect(2, 9, 12, 15)
    colour = np.dstack([gray_image(value=200), gray_image(value=100), gray_image(value=150)])
    with_masks, images_only = tmp_path / "stage1_train", tmp_path / "stage1_train_rest"
    write_dsb(with_masks, "k1", gray_image(value=10), [first * 255, second * 255], names=["b.png", "a.png"])
    write_dsb(with_masks, "k2", colour, [third * 255])
    write_dsb(images_only, "k3", gray_image(value=230), [])
    rows = [f"k1,{encode_rle(m, 'col')}" for m in (first, second)]  # CSV order differs from mask files
    rows += [f"k2,{encode_rle(third, 'col')}", f"k3,{encode_rle(first, 'col')}"]
    csv = tmp_path / "stage1_train_labels.csv"
    csv.write_text("ImageId,EncodedPixels\n" + "\n".join(rows) + "\n")

    coco, stats = convert.convert_csv_rle(csv, [with_masks, images_only], order="col", category="nucleus")
    assert (stats.images, stats.instances) == (3, 4)
    assert sorted(i["file_name"] for i in coco["images"]) == [
        "stage1_train/k1/images/k1.png", "stage1_train/k2/images/k2.png", "stage1_train_rest/k3/images/k3.png"]
    from_masks, _ = convert.convert_masks(with_masks)
    assert convert.instance_differences(coco, from_masks) == []
    assert {i["key"] for i in from_masks["images"]} == {"k1", "k2"}
    # a real difference is reported
    wrong, _ = convert.convert_csv_rle(csv, [with_masks, images_only], order="row", category="nucleus")
    assert convert.instance_differences(wrong, from_masks)


def test_csv_rle_same_id_in_two_folders_is_an_error(tmp_path):
    for folder in ("a", "b"):
        write_dsb(tmp_path / folder, "k1", gray_image(), [])
    csv = tmp_path / "labels.csv"
    csv.write_text(f"ImageId,EncodedPixels\nk1,{encode_rle(rect(0, 2, 0, 2), 'col')}\n")
    with pytest.raises(DataError, match="also in"):
        convert.convert_csv_rle(csv, [tmp_path / "a", tmp_path / "b"], order="col")


def test_masks_size_mismatch_names_both_files(tmp_path):
    root = tmp_path / "dsb"
    write_dsb(root, "k", gray_image(), [np.zeros((20, 31), np.uint8) + 255])
    with pytest.raises(DataError) as caught:
        convert.convert_masks(root)
    message = str(caught.value)
    assert str(root / "k" / "masks" / "m0.png") in message and str(root / "k" / "images" / "k.png") in message


def test_masks_bad_files_and_skip(tmp_path):
    root = tmp_path / "dsb"
    write_dsb(root, "good", gray_image(), [rect(0, 2, 0, 2) * 255, rect(5, 7, 5, 7) * 255])
    (root / "good" / "masks" / "m1.png").write_bytes(b"garbage")
    (root / "noimage" / "masks").mkdir(parents=True)
    with pytest.raises(DataError, match="cannot decode mask"):
        convert.convert_masks(root)
    coco, stats = convert.convert_masks(root, skip_bad=True)
    assert [i["key"] for i in coco["images"]] == ["good"]
    assert (stats.instances, stats.skipped_rows, stats.skipped_images) == (1, 1, 1)
    assert "1 skipped mask files, 1 skipped images" in stats.summary()


# --- instance label images ------------------------------------------------------------------


def test_labels_png16_and_tiff(tmp_path):
    images, labels = tmp_path / "imgs", tmp_path / "labels"
    write_png(images / "p.png", gray_image())
    write_png(images / "q.png", gray_image())
    label_map = np.zeros(SHAPE, np.uint16)
    label_map[0:3, 0:3] = 300
    label_map[10:20, 25:30] = 7  # touches the last pixel
    write_png(labels / "p_masks.png", label_map)
    write_png(labels / "q_masks.png", np.zeros(SHAPE, np.uint16))
    coco, stats = convert.convert_labels(images, labels, pattern="{id}_masks.png", category="cell")
    got = decoded_masks(coco, "p")
    np.testing.assert_array_equal(got[0], label_map == 7)  # ascending label values
    np.testing.assert_array_equal(got[1], label_map == 300)
    assert (stats.images, stats.instances, stats.empty_images, stats.overlapping_pixels) == (2, 2, 1, 0)
    tiff_labels = tmp_path / "tiffs"
    tiff_labels.mkdir()
    tifffile.imwrite(tiff_labels / "p.tif", label_map.astype(np.int32))
    tifffile.imwrite(tiff_labels / "q.tif", label_map.astype(np.int32))
    coco_tif, _ = convert.convert_labels(images, tiff_labels, pattern="{id}.tif")
    assert [a["segmentation"] for a in coco_tif["annotations"][:2]] == [a["segmentation"] for a in coco["annotations"]]
    default, _ = convert.convert_labels(images, tiff_labels)  # same stem, any suffix
    assert len(default["annotations"]) == 4


def test_labels_size_mismatch_and_missing(tmp_path):
    images, labels = tmp_path / "imgs", tmp_path / "labels"
    write_png(images / "p.png", gray_image())
    write_png(labels / "p.png", np.zeros((21, 30), np.uint16))
    with pytest.raises(DataError, match="label image is 21 x 30 pixels but image") as caught:
        convert.convert_labels(images, labels)
    assert caught.value.file == str(labels / "p.png") and str(images / "p.png") in str(caught.value)
    write_png(images / "r.png", gray_image())
    (labels / "p.png").unlink()
    with pytest.raises(DataError, match="label image not found"):
        convert.convert_labels(images, labels)
    coco, stats = convert.convert_labels(images, labels, skip_bad=True)
    assert coco["images"] == [] and stats.skipped_images == 2


def test_labels_rejects_colour_labels(tmp_path):
    images, labels = tmp_path / "imgs", tmp_path / "labels"
    write_png(images / "p.png", gray_image())
    colour = np.zeros(SHAPE + (3,), np.uint8)
    colour[0, 0] = (255, 0, 0)
    write_png(labels / "p.png", colour)
    with pytest.raises(DataError, match="colour"):
        convert.convert_labels(images, labels)


# --- HuBMAP polygons ------------------------------------------------------------------------


def write_polygons(tmp_path, records):
    images = tmp_path / "train"
    jsonl = tmp_path / "polygons.jsonl"
    lines = []
    for record in records:
        if isinstance(record, str):
            lines.append(record)
            continue
        write_png(images / f"{record['id']}.png", gray_image())
        lines.append(json.dumps(record))
    jsonl.write_text("\n".join(lines) + "\n")
    return jsonl, images


SQUARE = [[2, 2], [6, 2], [6, 5], [2, 5]]


def test_polygons_converter(tmp_path):
    ring_with_hole = [[[0, 10], [9, 10], [9, 19], [0, 19]], [[3, 13], [6, 13], [6, 16], [3, 16]]]
    records = [
        {"id": "t2", "annotations": [{"type": "glomerulus", "coordinates": [SQUARE]}]},
        {"id": "t1", "annotations": [
            {"type": "blood_vessel", "coordinates": SQUARE},
            {"type": "blood_vessel", "coordinates": ring_with_hole},
            {"type": "glomerulus", "coordinates": [[25, 15], [40, 15], [40, 30], [25, 30]]},
        ]},
    ]
    jsonl, images = write_polygons(tmp_path, records)
    coco, stats = convert.convert_polygons(jsonl, images)
    assert [c["name"] for c in coco["categories"]] == ["blood_vessel", "glomerulus"]
    assert [i["key"] for i in coco["images"]] == ["t1", "t2"]
    assert coco["images"][0]["image_class"] == "blood_vessel"
    masks = decoded_masks(coco, "t1")
    np.testing.assert_array_equal(masks[0], rect(2, 6, 2, 7))  # fillPoly includes the outline
    assert masks[1][10:20, 0:10].sum() == 100 - 4 and masks[1][14, 4] == 0  # hole cut out
    np.testing.assert_array_equal(masks[2], rect(15, 20, 25, 30))  # clipped to the image
    np.testing.assert_array_equal(decoded_masks(coco, "t2")[0], masks[0])
    assert stats.per_class == {"blood_vessel": 2, "glomerulus": 2}


def one_polygon(coordinates, **annotation):
    return {"id": "t", "annotations": [{"type": "g", "coordinates": coordinates, **annotation}]}


COORDINATES = "annotations[0].coordinates"


@pytest.mark.parametrize(
    "record, line, field, pattern",
    [
        (one_polygon([[1, 1], [5, 5]]), 2, COORDINATES, "2 points"),
        (one_polygon([[[1, 1], [5, 5]]]), 2, COORDINATES, "2 points"),
        (one_polygon([[1, "a"], [5, 5], [1, 5]]), 2, COORDINATES, "number pairs"),
        (one_polygon(SQUARE, type=""), 2, "annotations[0].type", "type"),
        (one_polygon([[100, 100], [120, 100], [120, 120]]), 2, COORDINATES, "outside"),
        ('{"id": "t", "annotations": [', 2, None, "not valid JSON"),
    ],
)
def test_polygons_bad_input(tmp_path, record, line, field, pattern):
    ok = {"id": "ok", "annotations": [{"type": "g", "coordinates": SQUARE}]}
    jsonl, images = write_polygons(tmp_path, [ok, record])
    with pytest.raises(DataError, match=pattern) as caught:
        convert.convert_polygons(jsonl, images)
    assert (caught.value.file, caught.value.row, caught.value.field) == (str(jsonl), line, field)
    coco, stats = convert.convert_polygons(jsonl, images, skip_bad=True)
    assert stats.skipped_rows + stats.skipped_images == 1 and stats.skipped
    assert "ok" in [i["key"] for i in coco["images"]]


def test_polygons_missing_image(tmp_path):
    jsonl, images = write_polygons(tmp_path, [{"id": "ok", "annotations": []}])
    with open(jsonl, "a") as handle:
        handle.write(json.dumps({"id": "ghost", "annotations": []}) + "\n")
    with pytest.raises(DataError, match="no image file for id 'ghost'") as caught:
        convert.convert_polygons(jsonl, images)
    assert caught.value.row == 2


# --- command line ---------------------------------------------------------------------------


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cell_seg.convert", *map(str, args)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env,
    )


def assert_one_line_error(result, *expected):
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0]


def test_cli_bad_rle_leaves_existing_output_untouched(tmp_path):
    csv, images = write_kaggle(tmp_path, extra_rows=["b,5 2 3,30,20,cort,,,,"])
    out = tmp_path / "coco.json"
    out.write_text("previous")
    result = run_cli("kaggle", "--csv", csv, "--images", images, "--out", out)
    assert_one_line_error(result, str(csv), "row 7", "field annotation", "odd number")
    assert out.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".coco.json")] == []


def test_cli_missing_image_writes_nothing(tmp_path):
    csv, images = write_kaggle(tmp_path)
    (images / "a.png").unlink()
    out = tmp_path / "out" / "coco.json"
    result = run_cli("kaggle", "--csv", csv, "--images", images, "--out", out, "--quiet")
    assert_one_line_error(result, "no image file for id 'a'")
    assert not out.exists()


def test_cli_polygon_and_label_errors(tmp_path):
    jsonl, images = write_polygons(tmp_path, [one_polygon([[1, 1], [2, 2]])])
    result = run_cli("polygons", "--jsonl", jsonl, "--images", images, "--out", tmp_path / "p.json")
    assert_one_line_error(result, "row 1", "2 points")
    labels = tmp_path / "labels"
    write_png(labels / "t.png", np.zeros((5, 5), np.uint16))
    result = run_cli("labels", "--images", images, "--labels", labels, "--out", tmp_path / "l.json")
    assert_one_line_error(result, str(labels / "t.png"), str(images / "t.png"))
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "l.json").exists()


def test_cli_success_skip_bad_and_stats(tmp_path, capsys):
    csv, images = write_kaggle(tmp_path, extra_rows=["b,0 2,30,20,cort,,,,"])
    out = tmp_path / "coco.json"
    result = run_cli("kaggle", "--csv", csv, "--images", images, "--out", out, "--skip-bad")
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first.startswith(f"wrote {out}: 3 images, 5 instances (astro 1, cort 3, shsy5y 1), 0 empty images, ")
    assert "1 skipped rows" in first and "decode " in first
    assert rest and "row 7" in rest[0] and rest[0].strip().startswith("skipped:")
    assert convert_cli.main(["stats", "--coco", str(out)]) == 0
    expected = f"{out}: 3 images, 5 instances (astro 1, cort 3, shsy5y 1), 0 empty images, 1 overlapping pixels"
    assert capsys.readouterr().out.strip() == expected


def test_cli_csv_rle_requires_order(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        convert_cli.main(["csv-rle", "--csv", "x.csv", "--images", "d", "--out", "o.json"])
    assert caught.value.code == 2 and "--order" in capsys.readouterr().err


def test_cli_help_is_fast_and_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("kaggle", "masks", "labels", "polygons", "csv-rle", "stats"):
        assert command in result.stdout


def test_helpers():
    assert convert.image_modality(np.zeros((4, 4), np.uint16)) == "fluorescence"
    pink = np.dstack([np.full((4, 4), 200, np.uint8), np.full((4, 4), 90, np.uint8), np.full((4, 4), 150, np.uint8)])
    assert convert.image_modality(pink) == "histology"
    indices = convert.polygon_indices([np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)], (3, 3))
    assert indices.tolist() == [0, 1, 3, 4]
    assert convert.polygon_indices([np.array([[-5, -5], [-1, -5], [-1, -1]], float)], (3, 3)).size == 0


def test_sample_data_resolves():
    from cell_seg.files import read_image
    from cell_seg.files import list_images
    from cell_seg.sample_data import COCO_JSON, IMAGES_DIR, ROOT

    coco = json.loads(COCO_JSON.read_text())
    assert len(coco["images"]) == 20 and len(coco["annotations"]) > 500
    assert len(list(IMAGES_DIR.glob("*.png"))) == 20
    assert {i["modality"] for i in coco["images"]} == {"fluorescence", "histology", "brightfield"}
    for image in coco["images"]:  # file_name resolves against the images folder
        assert read_image(IMAGES_DIR / image["file_name"]).shape[:2] == (image["height"], image["width"])
    assert sorted(list_images(IMAGES_DIR)) == sorted(image["key"] for image in coco["images"])
    assert sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file()) < 5e6
    stats = coco_stats(coco)
    assert stats.instances == len(coco["annotations"]) and stats.empty_images == 0


def test_empty_tree_is_not_a_dir(tmp_path):
    with pytest.raises(DataError, match="not found"):
        convert.convert_masks(tmp_path / "nope")
    assert Path(tmp_path).exists()


def test_cli_corrupt_png_is_one_line(tmp_path):
    csv, images = write_kaggle(tmp_path)
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = run_cli("kaggle", "--csv", csv, "--images", images, "--out", tmp_path / "c.json", "--quiet")
    assert_one_line_error(result, str(images / "b.png"), "cannot decode")
