"""Read a COCO JSON data set lazily: images from disk, instance label maps from the RLE.

A label map is built without ever holding one mask per instance: every annotation's
segmentation is turned into its compressed COCO RLE (polygons and uncompressed RLE are
converted with pycocotools), decoded to the flat pixel indices it covers (numpy, proportional
to the cell's area) and all instances are painted in one call to
`cell_seg.data.labels.paint_instances`.

Overlap rule: where ground-truth masks overlap (Sartorius masks share a few pixels), the
**later** annotation in the file's order wins the contested pixel. Contested pixels and
instances left with no pixel at all are counted in `CocoDataset.stats`.

Instance `k` of a label map is the `k`-th annotation of the image in file order (1-based); crowd
annotations (`iscrowd: 1`) are instances like any other.
"""

import collections
import threading
from pathlib import Path

import numpy as np

from cell_seg.data import labels as label_ops
from cell_seg.data import rle as rle_codec
from cell_seg.data.coco import validate_coco
from cell_seg.data.workers import ThreadStateNotPickled
from cell_seg.errors import DataError
from cell_seg.files import read_image, read_json


class CocoDataset(ThreadStateNotPickled):
    """Index of a COCO instance-segmentation file; loads images and label maps on demand.

    Args:
        coco: path of a COCO JSON file, or the already-loaded dict.
        images_dir: folder that image `file_name`s are relative to.
        cache_size: how many label maps to keep in an LRU cache (0: no cache).
        source: the file a given dict was read from, named in errors (default "<COCO dict>").

    The dict is checked by `cell_seg.data.coco.validate_coco` (as every reader of COCO files does).

    Example:
        >>> dataset = CocoDataset("train.json", "images")            # doctest: +SKIP
        >>> image_id = dataset.image_ids[0]                           # doctest: +SKIP
        >>> label_map, classes = dataset.load_labels(image_id)        # doctest: +SKIP
        >>> dataset.category_names[classes[label_map[10, 20]]]        # doctest: +SKIP
        'cort'
    """

    _THREAD_STATE = {"_lock": threading.Lock}

    def __init__(self, coco, images_dir, cache_size=0, source=None):
        if isinstance(coco, (str, Path)):
            self.source = str(coco)
            coco = read_json(coco)
        else:
            self.source = str(source) if source is not None else "<COCO dict>"
        validate_coco(coco, self.source)
        self.images_dir = Path(images_dir)
        self.cache_size = int(cache_size)
        self._cache = collections.OrderedDict()
        self._lock = threading.Lock()
        self.stats = {
            "images_loaded": 0,
            "label_maps_built": 0,
            "instances": 0,
            "overlapping_pixels": 0,
            "images_with_overlaps": 0,
            "empty_instances": 0,
            "cache_hits": 0,
        }

        categories = sorted(coco.get("categories") or [], key=lambda c: (isinstance(c["id"], str), c["id"]))
        self.category_ids = [c["id"] for c in categories]
        self.category_names = [str(c.get("name", c["id"])) for c in categories]
        self._category_index = {cid: i for i, cid in enumerate(self.category_ids)}

        # validate_coco checked ids, file names, references and segmentation types.
        self._images = {info["id"]: info for info in coco["images"]}
        self.image_ids = list(self._images)
        self._annotations = {image_id: [] for image_id in self.image_ids}
        for ann in coco["annotations"]:
            self._annotations[ann["image_id"]].append(ann)

    def __len__(self):
        return len(self.image_ids)

    # --- metadata --------------------------------------------------------------------------

    def image_info(self, image_id):
        """The COCO `images` record of `image_id` (a dict; do not modify it)."""
        try:
            return self._images[image_id]
        except KeyError:
            raise DataError(f"unknown image id {image_id!r}", file=self.source) from None

    def key(self, image_id):
        """The image's key: its `key` field, else the stem of its `file_name`."""
        info = self.image_info(image_id)
        return str(info["key"]) if info.get("key") is not None else Path(info["file_name"]).stem

    def annotations(self, image_id):
        """The image's annotations in file order (list of dicts; do not modify them)."""
        self.image_info(image_id)
        return self._annotations[image_id]

    def n_instances(self, image_id):
        """Number of annotations of the image."""
        return len(self.annotations(image_id))

    def image_class(self, image_id):
        """The image's class name: its `image_class` field, else its most common category, else None.

        An `image_class` that is a category id is given as that category's name. Ties between
        categories go to the lowest category id.
        """
        info = self.image_info(image_id)
        value = info.get("image_class")
        if value is not None:
            if not isinstance(value, str) and value in self._category_index:
                return self.category_names[self._category_index[value]]
            return str(value)
        anns = self._annotations[image_id]
        if not anns:
            return None
        counts = np.bincount([self._category_index[a["category_id"]] for a in anns], minlength=len(self.category_ids))
        return self.category_names[int(np.argmax(counts))]

    def image_path(self, image_id):
        """Path of the image file."""
        return self.images_dir / self.image_info(image_id)["file_name"]

    def image_shape(self, image_id):
        """(height, width) from the image record; read from the file when the record lacks them."""
        info = self.image_info(image_id)
        if info.get("height") and info.get("width"):
            return int(info["height"]), int(info["width"])
        return self.load_image(image_id).shape[:2]

    # --- pixels ----------------------------------------------------------------------------

    def load_image(self, image_id):
        """The raw image as stored (via `cell_seg.files.read_image`): uint8/uint16, `H x W` or `H x W x 3`.

        Raises `DataError` naming the file when it is missing or unreadable.
        """
        image = read_image(self.image_path(image_id))
        with self._lock:
            self.stats["images_loaded"] += 1
        return image

    def load_labels(self, image_id):
        """Instance label map and per-instance classes of an image.

        Returns:
            (label_map int32 `H x W`, instance_classes int32 of length N + 1) where
            `instance_classes[k]` is the 0-based category index (into `category_names`) of
            instance `k` and `instance_classes[0]` is -1 (background).

        Raises:
            DataError: an annotation whose RLE size differs from the image's size, or a
            segmentation that cannot be decoded; the message names the annotation id.
        """
        if self.cache_size > 0:
            with self._lock:
                cached = self._cache.get(image_id)
                if cached is not None:
                    self._cache.move_to_end(image_id)
                    self.stats["cache_hits"] += 1
                    return cached[0].copy(), cached[1].copy()
        label_map, classes = self._build_labels(image_id)
        if self.cache_size > 0:
            with self._lock:
                self._cache[image_id] = (label_map.copy(), classes.copy())
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return label_map, classes

    def _build_labels(self, image_id):
        shape = self.image_shape(image_id)
        anns = self._annotations[image_id]
        index_arrays = self._all_indices(anns, shape, image_id)
        label_map, overlapping = label_ops.paint_instances(index_arrays, shape, order="col")
        classes = np.array([-1] + [self._category_index[a["category_id"]] for a in anns], np.int32)
        present = np.bincount(label_map.ravel(), minlength=len(anns) + 1)[1:] > 0
        with self._lock:
            self.stats["label_maps_built"] += 1
            self.stats["instances"] += len(anns)
            self.stats["overlapping_pixels"] += overlapping
            self.stats["images_with_overlaps"] += int(overlapping > 0)
            self.stats["empty_instances"] += int((~present).sum())
        return label_map, classes

    def _all_indices(self, anns, shape, image_id):
        """Pixel indices of every annotation of an image; compressed RLEs are decoded in one batch."""
        compressed = []
        for position, ann in enumerate(anns):
            segmentation = ann["segmentation"]
            if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
                size = segmentation.get("size")
                if size is not None and len(size) == 2 and int(size[0]) == shape[0] and int(size[1]) == shape[1]:
                    compressed.append(position)
        batch = decode_counts_batch([anns[i]["segmentation"]["counts"] for i in compressed], shape[0] * shape[1])
        if batch is None:  # something is wrong: decode one by one to name the annotation
            compressed, batch = [], []
        arrays = [None] * len(anns)
        for position, indices in zip(compressed, batch):
            arrays[position] = indices
        for position, ann in enumerate(anns):
            if arrays[position] is None:
                arrays[position] = self._annotation_indices(ann, shape, image_id)
        return arrays

    def _annotation_indices(self, ann, shape, image_id):
        """Sorted column-major flat pixel indices of one annotation, checked against the image size."""
        segmentation = ann["segmentation"]
        ann_id = ann.get("id")
        try:
            if isinstance(segmentation, dict):
                size = segmentation.get("size")
                if size is None or [int(s) for s in size] != [shape[0], shape[1]]:
                    raise DataError(
                        f"annotation id {ann_id}: segmentation size {size} differs from the size "
                        f"{shape[0]}x{shape[1]} of image {image_id!r}",
                        file=self.source,
                        field="segmentation",
                    )
            if isinstance(segmentation, list) and not segmentation:
                return np.zeros(0, np.int64)
            indices = rle_codec.coco_to_indices(rle_codec.segmentation_to_coco(segmentation, shape))
            if indices.size and (indices[0] < 0 or indices[-1] >= shape[0] * shape[1]):
                raise DataError(f"runs cover pixels outside the {shape[0]}x{shape[1]} image")
            return indices
        except DataError as error:
            if error.file is None:
                raise DataError(
                    f"annotation id {ann_id}: {error.message}", file=self.source, field="segmentation"
                ) from None
            raise
        except (TypeError, ValueError, KeyError) as error:
            raise DataError(
                f"annotation id {ann_id}: cannot decode segmentation ({error})", file=self.source, field="segmentation"
            ) from None


def _segment_cumsum(values, segments):
    """Cumulative sum of `values` restarting wherever the (sorted) `segments` id changes."""
    if values.size == 0:
        return values
    total = np.cumsum(values)
    first = np.flatnonzero(np.concatenate([[True], segments[1:] != segments[:-1]]))
    before = total[first] - values[first]
    return total - np.repeat(before, np.diff(np.concatenate([first, [values.size]])))


def decode_counts_batch(counts_strings, n_pixels):
    """Sorted column-major pixel indices of many compressed COCO RLE counts strings, in one pass.

    The same decoding as `cell_seg.data.rle.coco_counts` + `coco_to_indices` (pycocotools'
    `rleFrString`: 5 data bits per character, a continuation bit, sign extension, deltas from
    the count two places back), done for all strings of an image at once so the per-call numpy
    overhead is paid once per image instead of once per cell.

    Args:
        counts_strings: list of str/bytes `counts`.
        n_pixels: H * W of the image, to reject runs past its end.

    Returns:
        list of int64 index arrays, one per string; or None when any string is malformed (callers
        then decode one by one to report which).

    Example:
        >>> [a.tolist() for a in decode_counts_batch(["123", "06", "6"], 6)]  # a 2 x 3 image
        [[1, 2], [0, 1, 2, 3, 4, 5], []]
    """
    n_strings = len(counts_strings)
    if n_strings == 0:
        return []
    encoded = [c.encode("ascii") if isinstance(c, str) else bytes(c) for c in counts_strings]
    lengths = np.array([len(c) for c in encoded], np.int64)
    chars = np.frombuffer(b"".join(encoded), np.uint8).astype(np.int64) - 48
    if chars.size == 0 or (chars < 0).any() or (chars > 63).any():
        return None if chars.size else [np.zeros(0, np.int64) for _ in encoded]
    group_end = (chars & 0x20) == 0
    if not group_end[(np.cumsum(lengths) - 1)[lengths > 0]].all():
        return None  # a string ends inside a group: truncated
    values, group_starts = rle_codec.decode_count_groups(chars)

    string_of_group = np.repeat(np.arange(n_strings), lengths)[group_starts]
    groups_per_string = np.bincount(string_of_group, minlength=n_strings)
    m = np.arange(values.size) - (np.cumsum(groups_per_string) - groups_per_string)[string_of_group]
    counts = values.copy()
    for parity, first_m in ((1, 1), (0, 2)):  # odd counts chain from m = 1, even ones from m = 2
        chain = np.flatnonzero((m % 2 == parity) & (m >= first_m))
        counts[chain] = _segment_cumsum(values[chain], string_of_group[chain])
    if (counts < 0).any():
        return None
    ends = _segment_cumsum(counts, string_of_group)
    if ends.size and ends.max() > n_pixels:
        return None
    foreground = m % 2 == 1
    run_lengths = counts[foreground]
    run_starts = (ends - counts)[foreground]
    total = int(run_lengths.sum())
    offsets = np.cumsum(run_lengths) - run_lengths
    indices = np.repeat(run_starts - offsets, run_lengths) + np.arange(total, dtype=np.int64)
    sizes = np.bincount(string_of_group[foreground], weights=run_lengths, minlength=n_strings).astype(np.int64)
    return np.split(indices, np.cumsum(sizes)[:-1])
