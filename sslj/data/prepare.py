"""Prepare a TFDS data set for sslj on a machine with internet access.

    python -m sslj.data.prepare cifar10 --data_dir /data/tfds

Copy the resulting directory to the training machine and point `data.data_dir` (or
TFDS_DATA_DIR) at it.
"""

import argparse

from sslj.data.sources import TFDS_DATASETS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(TFDS_DATASETS))
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)
    import tensorflow_datasets as tfds

    tfds.builder(args.name, data_dir=args.data_dir).download_and_prepare()
    print(f"prepared {args.name} in {args.data_dir or '~/tensorflow_datasets'}")


if __name__ == "__main__":
    main()
