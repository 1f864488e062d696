"""ssl_art.data: collections (CSV / folders / synthetic), robust decoding, multi-view transforms and loaders."""

from ssl_art.data.collection import IMAGE_EXTENSIONS, Collection, load_collection, read_manifest
from ssl_art.data.dataset import BadSample, ImageDataset, Substitute
from ssl_art.data.decode import BAD_KINDS, BadFileReport, BadImageError, load_image
from ssl_art.data.loaders import Batch, build_collection, build_loader, collate
from ssl_art.data.synthetic import SyntheticArt
from ssl_art.data.transforms import MultiView, build_eval_transform, build_pretrain_transform, build_view_transform
from ssl_art.runtime.errors import TooManyBadFilesError

__all__ = [
    "BAD_KINDS",
    "IMAGE_EXTENSIONS",
    "BadFileReport",
    "BadImageError",
    "BadSample",
    "Batch",
    "Collection",
    "ImageDataset",
    "MultiView",
    "Substitute",
    "SyntheticArt",
    "TooManyBadFilesError",
    "build_collection",
    "build_eval_transform",
    "build_loader",
    "build_pretrain_transform",
    "build_view_transform",
    "collate",
    "load_collection",
    "load_image",
    "read_manifest",
]
