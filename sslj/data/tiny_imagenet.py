"""TinyImageNet (200 classes, 64x64) as a TFDS builder with a manual download.

TFDS has no TinyImageNet, and no machine here downloads anything, so the archive is
placed by hand and this builder turns it into a TFDS data dir like any other:

    # tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip, or
    # the folder it unpacks to, in <manual_dir>
    python -m sslj.data.prepare tiny_imagenet --data_dir /data/tfds --manual_dir ~/dl

Splits: `train` (500 images per class) and `validation` (the official 10,000 labelled
validation images, 50 per class; the test set has no labels and is left out).

The class order decides what "the first 100 classes seen" (SPL's protocol) means, and
the paper does not say which it used, so two builders give the two usual orders:
  * `tiny_imagenet`: labels are the positions of the WordNet ids in the archive's
    `wnids.txt` (the first 100 lines of that file);
  * `tiny_imagenet_sorted`: labels follow the sorted WordNet ids, the order of
    torchvision's ImageFolder over `train/` (what a PyTorch pipeline such as the DS3L /
    SPL code's gets).
Importing this module registers both.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds

ARCHIVE = "tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"


def _find_root(manual_dir: str) -> str:
    folder = os.path.join(manual_dir, FOLDER)
    if os.path.isdir(folder):
        return folder
    archive = os.path.join(manual_dir, ARCHIVE)
    if os.path.exists(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(manual_dir)
        return folder
    raise FileNotFoundError(f"neither {ARCHIVE} nor {FOLDER}/ is in the manual dir "
                            f"{manual_dir}; {TinyImagenet.MANUAL_DOWNLOAD_INSTRUCTIONS}")


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    """TinyImageNet-200 from a manually placed archive."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "sslj's builder: train + labelled validation."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {ARCHIVE} (http://cs231n.stanford.edu/{ARCHIVE}) on a machine with "
        f"internet access and put it, or the {FOLDER}/ folder it unpacks to, in the "
        "manual dir (`--manual_dir`, default <data_dir>/downloads/manual).")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(64, 64, 3)),
                "label": tfds.features.ClassLabel(num_classes=200),
            }),
            supervised_keys=("image", "label"),
            homepage="http://cs231n.stanford.edu/",
        )

    def class_order(self, wnids: list[str]) -> list[str]:
        """The wnids in label order: as `wnids.txt` lists them."""
        return wnids

    def _split_generators(self, dl_manager):
        root = _find_root(str(dl_manager.manual_dir))
        with open(os.path.join(root, "wnids.txt")) as f:
            wnids = [line.strip() for line in f if line.strip()]
        if len(wnids) != 200:
            raise ValueError(f"{root}/wnids.txt lists {len(wnids)} classes, expected 200")
        index = {w: i for i, w in enumerate(self.class_order(wnids))}
        return {"train": self._generate_examples(root, "train", index),
                "validation": self._generate_examples(root, "val", index)}

    def _generate_examples(self, root, split, index):
        if split == "train":
            for wnid in sorted(index):
                folder = os.path.join(root, "train", wnid, "images")
                for name in sorted(os.listdir(folder)):
                    yield name, {"image": _rgb(os.path.join(folder, name)),
                                 "label": index[wnid]}
        else:
            with open(os.path.join(root, "val", "val_annotations.txt")) as f:
                rows = [line.split("\t")[:2] for line in f if line.strip()]
            for name, wnid in rows:
                yield name, {"image": _rgb(os.path.join(root, "val", "images", name)),
                             "label": index[wnid]}


class TinyImagenetSorted(TinyImagenet):
    """TinyImageNet-200 with labels in sorted-WordNet-id order (torchvision's ImageFolder)."""

    RELEASE_NOTES = {"1.0.0": "sslj's builder, labels in sorted wnid order."}

    def class_order(self, wnids: list[str]) -> list[str]:
        return sorted(wnids)


def _rgb(path: str) -> np.ndarray:
    """The image as (64, 64, 3) uint8 (some TinyImageNet JPEGs are greyscale)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)
