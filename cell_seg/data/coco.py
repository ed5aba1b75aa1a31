"""Small helpers to build, summarise and subset COCO instance-segmentation dicts.

Every converter in `cell_seg.data.convert` fills a `CocoBuilder` one image at a time and gets
back the COCO dict and a `ConversionStats`. The layout written (and expected by the loaders):

- `images`: int `id` 1..N in order of `key` (the image id string, usually the file stem),
  `file_name` relative to the images folder, `width`, `height`, `image_class` and any extra
  per-image fields (e.g. Sartorius `sample_id`, `plate_time`) that `split` can group by.
- `annotations`: int `id` 1..M, `image_id`, `category_id`, `segmentation` as compressed RLE
  with `str` counts, `area`, `bbox` ([x, y, w, h], as pycocotools computes them), `iscrowd` 0.
- `categories`: `id` 1..K in order of `name`.
"""

from dataclasses import dataclass, field

import numpy as np

from cell_seg.data import rle as rle_codec
from cell_seg.errors import DataError


@dataclass
class ConversionStats:
    """What a conversion (or a COCO file) holds, and what was skipped on the way.

    Attributes:
        images: images written.
        instances: annotations written.
        per_class: category name -> instances (every category, zero counts included).
        empty_images: images written with no instance.
        overlapping_pixels: pixels covered by more than one instance of the same image, summed.
        skipped_rows: input records dropped with `skip_bad` (rows, lines, polygons, mask files).
        skipped_images: images dropped with `skip_bad` (missing, corrupt, wrong size).
        skipped: one message per skipped record or image, naming file and row.
        empty_masks: instances dropped because they cover no pixel (empty mask PNGs, empty RLE).
        row_unit: what `skipped_rows` counts ("rows", "polygons", "mask files"); None hides it.
        seconds: time the conversion took; None hides it.
    """

    images: int = 0
    instances: int = 0
    per_class: dict = field(default_factory=dict)
    empty_images: int = 0
    overlapping_pixels: int = 0
    skipped_rows: int = 0
    skipped_images: int = 0
    skipped: list = field(default_factory=list)
    empty_masks: int = 0
    row_unit: str = "rows"
    seconds: float = None

    def summary(self, target=None):
        """One line describing the result, e.g. for `wrote coco.json`.

        Example:
            >>> stats = ConversionStats(2, 5, {"a": 3, "b": 2}, empty_images=1, seconds=1.5)
            >>> print(stats.summary("wrote out.json"))  # doctest: +NORMALIZE_WHITESPACE
            wrote out.json: 2 images, 5 instances (a 3, b 2), 1 empty images, 0 overlapping pixels,
            0 skipped rows, decode 1.5 s
        """
        classes = ", ".join(f"{name} {count}" for name, count in self.per_class.items())
        parts = [f"{self.images} images", f"{self.instances} instances" + (f" ({classes})" if classes else "")]
        parts.append(f"{self.empty_images} empty images")
        parts.append(f"{self.overlapping_pixels} overlapping pixels")
        if self.empty_masks:
            parts.append(f"{self.empty_masks} empty masks dropped")
        if self.row_unit is not None:
            parts.append(f"{self.skipped_rows} skipped {self.row_unit}")
        if self.skipped_images:
            parts.append(f"{self.skipped_images} skipped images")
        if self.seconds is not None:
            parts.append(f"decode {self.seconds:.1f} s")
        text = ", ".join(parts)
        return f"{target}: {text}" if target else text


def overlapping_pixels(index_arrays, n_pixels):
    """Pixels covered by more than one of the given flat-index arrays (one array per instance).

    Example:
        >>> overlapping_pixels([np.array([0, 1, 2]), np.array([2, 3]), np.array([2])], 4)
        1
    """
    arrays = [np.asarray(a, np.int64) for a in index_arrays if len(a)]
    if len(arrays) < 2:
        return 0
    coverage = np.bincount(np.concatenate(arrays), minlength=n_pixels)
    return int((coverage > 1).sum())


class CocoBuilder:
    """Collect images with their instances; hand out int ids in image-key order at the end.

    Args:
        categories: category names (any order, duplicates ignored); ids 1..K follow sorted names.
        info: optional dict stored as the COCO `info` block.

    Example:
        >>> builder = CocoBuilder(["cell"])
        >>> rle = rle_codec.rle_to_coco("1 2", (2, 2), order="row")
        >>> builder.add_image("b", "b.png", 2, 2, image_class="cell", instances=[("cell", rle, None)])
        >>> builder.add_image("a", "a.png", 2, 2, image_class="cell")
        >>> coco, stats = builder.build()
        >>> [(image["id"], image["key"]) for image in coco["images"]], coco["annotations"][0]["image_id"]
        ([(1, 'a'), (2, 'b')], 2)
        >>> stats.images, stats.instances, stats.empty_images
        (2, 1, 1)
    """

    def __init__(self, categories, info=None):
        names = sorted(set(str(name) for name in categories))
        self.category_ids = {name: i + 1 for i, name in enumerate(names)}
        self.info = info
        self.stats = ConversionStats(per_class={name: 0 for name in names})
        self._images = {}

    def add_category(self, name):
        """Add a category late (ids are renumbered by name at `build`)."""
        if name not in self.category_ids:
            self.category_ids[name] = len(self.category_ids) + 1

    def add_image(self, key, file_name, height, width, image_class=None, instances=(), **extra):
        """Add one image and its instances.

        Args:
            key: the image id string (file stem); images are numbered in `key` order.
            file_name: path relative to the images folder, with forward slashes.
            height, width: image size.
            image_class: per-image class used to stratify splits (cell type, or the category).
            instances: (category name, compressed COCO RLE, sorted column-major indices or None).
                Instances with no pixel are dropped and counted in `stats.empty_masks`.
            extra: more per-image fields (None values are left out).
        """
        if key in self._images:
            raise ValueError(f"image {key!r} added twice")
        height, width = int(height), int(width)
        record = {"key": str(key), "file_name": str(file_name), "width": width, "height": height}
        if image_class is not None:
            record["image_class"] = str(image_class)
        record.update({name: value for name, value in extra.items() if value is not None})
        annotations, index_arrays = [], []
        for category, rle, indices in instances:
            if indices is None:
                indices = rle_codec.coco_to_indices(rle)
            if len(indices) == 0:
                self.stats.empty_masks += 1
                continue
            if category not in self.category_ids:
                self.add_category(category)
            area, bbox = rle_codec.coco_area_bbox(rle)
            annotations.append({"category": category, "segmentation": rle, "area": area, "bbox": bbox, "iscrowd": 0})
            index_arrays.append(indices)
        self.stats.overlapping_pixels += overlapping_pixels(index_arrays, height * width)
        self._images[key] = (record, annotations)

    def skip(self, message, image=False):
        """Count one skipped input row (or a whole image) and remember why."""
        if image:
            self.stats.skipped_images += 1
        else:
            self.stats.skipped_rows += 1
        self.stats.skipped.append(str(message))

    def build(self):
        """Return (coco dict, ConversionStats), ids assigned in key order."""
        names = sorted(self.category_ids)
        category_ids = {name: i + 1 for i, name in enumerate(names)}
        stats = self.stats
        stats.per_class = {name: 0 for name in names}
        images, annotations = [], []
        for image_id, key in enumerate(sorted(self._images), start=1):
            record, image_annotations = self._images[key]
            images.append({"id": image_id, **record})
            for annotation in image_annotations:
                name = annotation["category"]
                stats.per_class[name] += 1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category_ids[name],
                        "segmentation": annotation["segmentation"],
                        "area": annotation["area"],
                        "bbox": annotation["bbox"],
                        "iscrowd": annotation["iscrowd"],
                    }
                )
            stats.empty_images += not image_annotations
        stats.images, stats.instances = len(images), len(annotations)
        coco = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": category_ids[name], "name": name, "supercategory": "cell"} for name in names],
        }
        if self.info is not None:
            coco["info"] = dict(self.info)
        return coco, stats


def _is_id(value):
    """COCO ids: ints (or strings, which some tools write); never bool, float or null."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _segmentation_problem(segmentation):
    """Why a segmentation is not compressed/uncompressed RLE or polygons, or None when it is one."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_count(s) for s in size):
            return f"RLE 'size' must be [height, width], not {size!r}"[:200]
        counts = segmentation.get("counts")
        if isinstance(counts, (str, bytes)):
            return None
        if isinstance(counts, list) and all(_is_count(c) for c in counts):
            return None
        return "RLE 'counts' must be a string or a list of non-negative integers"
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in polygon
            ):
                return "polygons must be lists of numbers"
            if len(polygon) % 2 or len(polygon) < 6:
                return f"a polygon needs an even number (at least 6) of coordinates, not {len(polygon)}"
        return None
    return f"must be an RLE object or a list of polygons, not {type(segmentation).__name__}"


def _top_level_lists(coco, source):
    """The categories list (empty when absent), after checking `images` and `annotations` are lists."""
    if not isinstance(coco, dict):
        raise DataError(f"a COCO file must hold a JSON object, not {type(coco).__name__}", file=source)
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise DataError("missing or not a list", file=source, field=key)
    categories = coco.get("categories")
    if categories is None:
        categories = []
    if not isinstance(categories, list):
        raise DataError("not a list", file=source, field="categories")
    return categories


def _category_ids(categories, source):
    """Set of category ids; DataError for a category without an id or a repeated id."""
    category_ids = set()
    for position, category in enumerate(categories):
        where = f"categories[{position}]"
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            raise DataError(f"{where} must be an object with an integer 'id'", file=source, field="categories")
        if category["id"] in category_ids:
            raise DataError(f"duplicate category id {category['id']!r}", file=source, field="categories")
        category_ids.add(category["id"])
    return category_ids


def _image_ids(images, source):
    """Set of image ids; DataError for a repeated id, a missing file_name or a bad class or size."""
    image_ids = set()
    for position, image in enumerate(images):
        where = f"images[{position}]"
        if not isinstance(image, dict):
            raise DataError(f"{where} must be an object, not {type(image).__name__}", file=source, field="images")
        if not _is_id(image.get("id")):
            raise DataError(f"{where} has no integer 'id' (got {image.get('id')!r})"[:200], file=source, field="id")
        if image["id"] in image_ids:
            raise DataError(f"duplicate image id {image['id']!r}", file=source, field="images")
        image_ids.add(image["id"])
        name = image.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"image id {image['id']!r} has no file_name", file=source, field="file_name")
        image_class = image.get("image_class")
        if image_class is not None and not isinstance(image_class, (str, int)):
            raise DataError(f"image id {image['id']!r}: image_class must be a string, not {type(image_class).__name__}",
                            file=source, field="image_class")
        for key in ("height", "width"):
            if key in image and image[key] is not None and not (_is_count(image[key]) and image[key] > 0):
                raise DataError(f"image id {image['id']!r}: {key} must be a positive integer, not {image[key]!r}"[:200],
                                file=source, field=key)
    return image_ids


def _check_annotation(position, annotation, image_ids, category_ids, source):
    """DataError unless the annotation names a known image and category and has a segmentation."""
    if not isinstance(annotation, dict):
        raise DataError(f"annotations[{position}] must be an object, not {type(annotation).__name__}",
                        file=source, field="annotations")
    ann_id = annotation.get("id")
    name = f"annotation id {ann_id!r}" if _is_id(ann_id) else f"annotations[{position}]"
    if "image_id" not in annotation:
        raise DataError(f"{name} has no image_id", file=source, field="image_id")
    image_id = annotation["image_id"]
    if not _is_id(image_id) or image_id not in image_ids:
        raise DataError(f"{name} refers to unknown image id {image_id!r}"[:200], file=source, field="image_id")
    category_id = annotation.get("category_id")
    if not _is_id(category_id) or category_id not in category_ids:
        raise DataError(f"{name} has unknown category id {category_id!r}"[:200], file=source, field="category_id")
    if "segmentation" not in annotation:
        raise DataError(f"{name} has no segmentation", file=source, field="segmentation")
    problem = _segmentation_problem(annotation["segmentation"])
    if problem:
        raise DataError(f"{name}: segmentation {problem}", file=source, field="segmentation")


def validate_coco(coco, source):
    """Check the structure of a COCO instance-segmentation dict; every reader runs this first.

    Checks that `images`, `annotations` (and `categories`, when present) are lists of objects;
    images have a unique id and a `file_name` (and positive integer `width`/`height` when given);
    categories have unique ids; every annotation names a known `image_id` and `category_id` and
    has a decodable-looking `segmentation` (RLE object or polygons). Sizes against the image and
    the RLE contents are checked when a label map is built.

    Args:
        coco: the loaded JSON.
        source: the file it came from, named in every error.

    Returns:
        `coco`, unchanged.

    Raises:
        DataError: naming `source`, the image index or annotation id, and the field.

    Example:
        >>> coco = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1}],
        ...         "annotations": [{"id": 7, "image_id": 2, "category_id": 1, "segmentation": []}]}
        >>> validate_coco(coco, "val.json")
        Traceback (most recent call last):
        cell_seg.errors.DataError: val.json, field image_id: annotation id 7 refers to unknown image id 2
    """
    source = str(source)
    categories = _top_level_lists(coco, source)
    category_ids = _category_ids(categories, source)
    image_ids = _image_ids(coco["images"], source)
    for position, annotation in enumerate(coco["annotations"]):
        _check_annotation(position, annotation, image_ids, category_ids, source)
    return coco


def coco_stats(coco):
    """Summarise an existing COCO dict: images, instances per class, empty images, overlaps.

    Segmentations may be compressed RLE, uncompressed RLE or polygons.

    Example:
        >>> builder = CocoBuilder(["cell"])
        >>> rle = rle_codec.rle_to_coco("1 3", (2, 2), order="row")
        >>> builder.add_image("a", "a.png", 2, 2, instances=[("cell", rle, None), ("cell", rle, None)])
        >>> coco_stats(builder.build()[0]).summary()
        '1 images, 2 instances (cell 2), 0 empty images, 3 overlapping pixels'
    """
    names = {category["id"]: str(category.get("name", category["id"])) for category in coco.get("categories") or []}
    stats = ConversionStats(per_class={names[i]: 0 for i in sorted(names, key=lambda i: names[i])}, row_unit=None)
    by_image = {image["id"]: [] for image in coco["images"]}
    sizes = {image["id"]: (image["height"], image["width"]) for image in coco["images"]
             if image.get("height") and image.get("width")}
    for annotation in coco["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
        name = names.get(annotation["category_id"], str(annotation["category_id"]))
        stats.per_class[name] = stats.per_class.get(name, 0) + 1
    for image_id, annotations in by_image.items():
        stats.empty_images += not annotations
        if len(annotations) < 2 or image_id not in sizes:
            continue
        shape = sizes[image_id]
        rles = [rle_codec.segmentation_to_coco(annotation["segmentation"], shape) for annotation in annotations]
        arrays = [rle_codec.coco_to_indices(rle) for rle in rles]
        stats.overlapping_pixels += overlapping_pixels(arrays, shape[0] * shape[1])
    stats.images, stats.instances = len(coco["images"]), len(coco["annotations"])
    return stats


def subset_coco(coco, image_ids):
    """COCO dict restricted to the given image ids (ids, categories and other keys kept).

    Example:
        >>> coco = {"images": [{"id": 1}, {"id": 2}], "annotations": [{"id": 1, "image_id": 2}], "categories": []}
        >>> subset_coco(coco, [2])["annotations"]
        [{'id': 1, 'image_id': 2}]
    """
    keep = set(image_ids)
    out = {key: value for key, value in coco.items() if key not in ("images", "annotations")}
    out["images"] = [image for image in coco["images"] if image["id"] in keep]
    out["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    return out
