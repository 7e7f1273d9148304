"""The reproduction harness: one run per (method, sweep value, seed), mean +- std table."""

import numpy as np

from experiments import reproduce
from experiments.tables import TABLES


def test_run_table_wires_rows_and_aggregates(tmp_path, monkeypatch):
    seen = []

    def fake_train(cfg, workdir):  # accuracy depends on method, ratio and seed
        seen.append((cfg.method, cfg.split.mismatch_ratio, cfg.seed, cfg.optimizer.lr,
                     cfg.num_steps))
        acc = 0.9 - 0.1 * cfg.split.mismatch_ratio + 0.01 * cfg.seed
        acc += 0.02 * (cfg.method == "pi_model")
        return {"test_accuracy_at_best_val": acc}

    monkeypatch.setattr("sslj.train.loop.train_and_evaluate", fake_train)
    md = reproduce.run_table("oliver_mismatch", "embedded", 2, str(tmp_path),
                             sets=["num_steps=7"])
    table = TABLES["oliver_mismatch"]
    assert len(seen) == len(table.methods) * len(table.sweep_values) * 2
    assert all(s[4] == 7 for s in seen)
    assert {s[3] for s in seen if s[0] == "pi_model"} == {3e-4}  # method override kept
    # supervised at ratio 0.5: accuracies 0.85, 0.86 -> error 14.5 +- 0.5
    row = next(line for line in md.splitlines() if line.startswith("| supervised"))
    assert "14.50 +- 0.50" in row
    pi_row = next(line for line in md.splitlines() if line.startswith("| pi_model"))
    assert pi_row.split("|")[2].strip() == f"{100 * (1 - 0.925):.2f} +- 0.50"
    assert (tmp_path / "oliver_mismatch_embedded.md").read_text() == md
    assert (tmp_path / "oliver_mismatch_embedded.png").stat().st_size > 1000
    assert np.isclose(0.925, 0.9 + 0.005 + 0.02)
