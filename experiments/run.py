"""Run an sslj experiment from a config file.

    python experiments/run.py                                   # the embedded default
    python experiments/run.py --config experiments/configs/default.py \
        --config.split.mismatch_ratio=0.25 --workdir runs/mm025

A config whose `compare` lists several methods (comma-separated) trains each into
<workdir>/<method> and prints a comparison table; otherwise `config.method` is trained
into <workdir>.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import common  # noqa: E402  (sets XLA flags before JAX starts)

_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "Config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Directory for all outputs.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    common.run_config(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
