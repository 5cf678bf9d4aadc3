"""Captures in: Camera/Scene types, readers (COLMAP, transforms.json, LLFF), image loading with
undistortion and downscaling, writers, and the train/test splits every experiment uses."""

from genfusion.data.images import load_image, verify_images
from genfusion.data.load import detect_format, load_scene
from genfusion.data.splits import CropWindow, Split, holdout_split, masked_split, sparse_split
from genfusion.data.summary import summarize_scene
from genfusion.data.types import Camera, Scene

__all__ = [
    "Camera",
    "CropWindow",
    "Scene",
    "Split",
    "detect_format",
    "holdout_split",
    "load_image",
    "load_scene",
    "masked_split",
    "sparse_split",
    "summarize_scene",
    "verify_images",
]
