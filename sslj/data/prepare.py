"""Prepare a TFDS data set for sslj on a machine with internet access.

    python -m sslj.data.prepare cifar10 --data_dir /data/tfds
    python -m sslj.data.prepare tiny_imagenet --data_dir /data/tfds --manual_dir ~/dl

Copy the resulting directory to the training machine and point `data.data_dir` (or
TFDS_DATA_DIR) at it.
"""

import argparse
import socket
import threading

from sslj.data.sources import TFDS_DATASETS

# TFDS downloads from its GCS mirror or the data set's own host; one reachable host is
# the cheapest sign that downloading can work at all
PROBE = ("storage.googleapis.com", 443)


def online(timeout: float = 5.0, probe=PROBE) -> bool:
    """Whether a TCP connection to `probe` opens within `timeout` seconds (DNS included:
    an offline resolver can otherwise retry for minutes)."""
    result = []

    def attempt():
        try:
            socket.create_connection(probe, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(TFDS_DATASETS))
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--manual_dir", default=None,
                        help="where a manually downloaded archive lies (tiny_imagenet)")
    parser.add_argument("--skip_online_check", action="store_true",
                        help="download even if the quick connectivity probe fails")
    args = parser.parse_args(argv)
    if not args.manual_dir and not args.skip_online_check and not online():
        raise SystemExit(
            f"error: no internet connection here ({PROBE[0]} is unreachable), so TFDS "
            f"cannot download {args.name}. On a machine with internet run\n"
            f"    python -m sslj.data.prepare {args.name} --data_dir <dir>\n"
            "then copy <dir> here and pass --config.data.data_dir=<dir> (or set "
            "TFDS_DATA_DIR).")
    import tensorflow_datasets as tfds

    if args.name.startswith("tiny_imagenet"):
        import sslj.data.tiny_imagenet  # noqa: F401  (registers the builders)
    config = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
    tfds.builder(args.name, data_dir=args.data_dir).download_and_prepare(
        download_config=config)
    print(f"prepared {args.name} in {args.data_dir or '~/tensorflow_datasets'}")


if __name__ == "__main__":
    main()
