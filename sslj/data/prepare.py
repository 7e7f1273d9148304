"""Prepare a TFDS data set for sslj on a machine with internet access.

    python -m sslj.data.prepare cifar10 --data_dir /data/tfds
    python -m sslj.data.prepare tiny_imagenet --data_dir /data/tfds --manual_dir ~/dl

Copy the resulting directory to the training machine and point `data.data_dir` (or
TFDS_DATA_DIR) at it.
"""

import argparse

from sslj.data.sources import TFDS_DATASETS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(TFDS_DATASETS))
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--manual_dir", default=None,
                        help="where a manually downloaded archive lies (tiny_imagenet)")
    args = parser.parse_args(argv)
    import tensorflow_datasets as tfds

    if args.name.startswith("tiny_imagenet"):
        import sslj.data.tiny_imagenet  # noqa: F401  (registers the builders)
    config = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
    tfds.builder(args.name, data_dir=args.data_dir).download_and_prepare(
        download_config=config)
    print(f"prepared {args.name} in {args.data_dir or '~/tensorflow_datasets'}")


if __name__ == "__main__":
    main()
