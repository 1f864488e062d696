"""Map-style dataset over a :class:`~ssl_art.data.collection.Collection` that never raises for a bad file.

``ImageDataset[i]`` returns ``(x, target, i)`` -- ``x`` is whatever the transform returns (one tensor, or a list of
views from :class:`~ssl_art.data.transforms.MultiView`) -- or a :class:`BadSample` when the file cannot be decoded
(including a file deleted after indexing). The collate function in :mod:`ssl_art.data.loaders` drops bad samples
and reports them in the batch, so one corrupt JPEG costs one sample, not a training run. A :class:`Substitute`
(made by the training engine) carries a bad sample together with the readable sample standing in for it, so a
batch keeps its size (multi-process training needs equal batches on every rank).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from ssl_art.data.collection import SYNTHETIC_PREFIX, Collection
from ssl_art.data.decode import BadImageError, load_image


@dataclass(frozen=True)
class BadSample:
    """A sample that could not be decoded.

    Attributes:
        index: dataset index.
        kind: one of :data:`ssl_art.data.decode.BAD_KINDS`.
        path: the offending file.
    """

    index: int
    kind: str
    path: str


@dataclass(frozen=True)
class Substitute:
    """A bad sample and the readable ``(x, target, index)`` sample that takes its place in the batch.

    Attributes:
        bad: what could not be read (counted as bad).
        sample: the stand-in, collated like any good sample.
    """

    bad: BadSample
    sample: tuple[Any, int, int]


class ImageDataset(Dataset[Any]):
    """Decode and transform the images of a collection.

    Args:
        collection: the indexed images and labels.
        transform: PIL image -> tensor or list of tensors.
        max_image_pixels: decompression-bomb limit passed to :func:`~ssl_art.data.decode.load_image`.
        label_column: class column used for ``target``; an unlabeled collection gives ``-1`` everywhere.

    Raises:
        ValueError: when the collection has label columns but not ``label_column`` (a misconfiguration).
    """

    def __init__(
        self,
        collection: Collection,
        transform: Callable[[Image.Image], Any],
        max_image_pixels: int = 178_956_970,
        label_column: str = "label",
    ) -> None:
        self.collection, self.transform = collection, transform
        self.max_image_pixels = max_image_pixels
        if collection.labels:
            self.targets = [int(t) for t in collection.targets(label_column)]  # raises naming the columns
            self.classes = collection.classes(label_column)
        else:
            self.targets = [-1] * len(collection)
            self.classes = []

    def __len__(self) -> int:
        return len(self.collection)

    def load(self, i: int) -> Image.Image:
        """Decode image ``i`` (RGB).

        Raises:
            BadImageError: when the file is unusable.
        """
        path = self.collection.paths[i]
        if path.startswith(SYNTHETIC_PREFIX):
            if self.collection.synthetic is None:
                raise BadImageError("missing", path, "synthetic path without a synthetic generator")
            return self.collection.synthetic.image(int(path[len(SYNTHETIC_PREFIX) :]))
        return load_image(path, self.max_image_pixels)

    def __getitem__(self, i: int) -> tuple[Any, int, int] | BadSample:
        try:
            image = self.load(i)
            x = self.transform(image)  # the eval transform's SizeGuard may refuse a resize bomb here
        except BadImageError as e:
            return BadSample(i, e.kind, self.collection.paths[i])
        return x, self.targets[i], i
