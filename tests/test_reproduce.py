"""The reproduction harness: one run per (method, sweep value, seed), mean +- std table."""

import numpy as np

from experiments import reproduce
from experiments.tables import TABLES


def test_run_table_wires_rows_and_aggregates(tmp_path, monkeypatch):
    seen = []

    def fake_train(cfg, workdir, pretrained_dir=None, stop_at=None, devices=None):
        # accuracy depends on method, ratio and seed
        seen.append((cfg.method, cfg.split.mismatch_ratio, cfg.seed, cfg.optimizer.lr,
                     cfg.num_steps))
        acc = 0.9 - 0.1 * cfg.split.mismatch_ratio + 0.01 * cfg.seed
        acc += 0.02 * (cfg.method == "pi_model")
        return {"test_accuracy_at_best_val": acc}

    monkeypatch.setattr("sslj.procedures.standard.run", fake_train)
    md = reproduce.run_table("oliver_mismatch", "embedded", 2, str(tmp_path),
                             sets=["num_steps=7"])
    table = TABLES["oliver_mismatch"]
    assert len(seen) == len(table.methods) * len(table.sweep_values) * 2
    assert all(s[4] == 7 for s in seen)
    assert {s[3] for s in seen if s[0] == "pi_model"} == {3e-4}  # method override kept
    # supervised at ratio 0.5: accuracies 0.85, 0.86 -> errors 15, 14: 14.5 +- 0.71
    # (the sample std, ddof 1), then each seed's own number
    row = next(line for line in md.splitlines() if line.startswith("| supervised"))
    assert "14.50 +- 0.71" in row
    pi_row = next(line for line in md.splitlines() if line.startswith("| pi_model"))
    assert pi_row.split("|")[2].strip() == "7.50 +- 0.71"  # errors 8, 7 at ratio 0
    per_seed = md[md.index("Per seed (0 / 1)"):]
    assert "| supervised | 10.00 / 9.00 |" in per_seed  # ratio 0: errors 10, 9
    # another seed offset: seeds 2 and 3
    seen.clear()
    md2 = reproduce.run_table("oliver_mismatch", "embedded", 2, str(tmp_path / "b"),
                              sets=["num_steps=7"], rows=["supervised"], seed_offset=2)
    assert sorted({s[2] for s in seen}) == [2, 3] and "seeds 2-3" in md2
    assert (tmp_path / "oliver_mismatch_embedded.md").read_text() == md
    assert (tmp_path / "oliver_mismatch_embedded.png").stat().st_size > 1000


def test_oliver_table1_configs_validate_and_split_at_paper_sizes():
    """Full-scale rows: every method validates and the split has the paper's sizes
    (labels drawn like CIFAR-10's / SVHN's training sets, no TFDS needed)."""
    import importlib

    from sslj.config import for_method, parse_methods, validate
    from sslj.data.splits import class_mismatch

    sizes = {"oliver_cifar10_4000": (np.repeat(np.arange(10), 5000), 4000, 41000, 5000),
             "oliver_svhn_1000": (np.random.default_rng(0).choice(
                 10, 73257, p=np.r_[0.07, 0.19, np.full(8, 0.74 / 8)]), 1000, 64931, 7326)}
    for name, (labels, n_labeled, n_unlabeled, n_val) in sizes.items():
        module = importlib.import_module(f"experiments.configs.{name}")
        c = module.get_config()
        assert set(parse_methods(c.compare)) == set(module.EXPECTED_ERROR)
        for m in parse_methods(c.compare):
            validate(for_method(c, m), device_count=1)
            assert module.get_config(m).method == m and module.get_config(m).compare == ""
        sp = class_mismatch(labels, seen_classes=c.split.seen_classes,
                            mismatch_ratio=c.split.mismatch_ratio,
                            labels_per_class=c.split.labels_per_class,
                            unlabeled_size=c.split.unlabeled_size,
                            num_validation=c.split.num_validation,
                            validation_source=c.split.validation_source)
        assert (len(sp.labeled), len(sp.unlabeled), len(sp.validation)) == (
            n_labeled, n_unlabeled, n_val)
        assert len(np.intersect1d(sp.labeled, sp.unlabeled)) == 0
    assert TABLES["oliver_table1"].paper["vat_entmin"] == 13.13
    assert set(TABLES["oliver_mismatch"].methods) >= {"vat", "mean_teacher", "pseudo_label"}


def test_label_noise_tables_wire_targets_noise_and_dynamics(tmp_path, monkeypatch):
    seen = []

    def fake_train(cfg, workdir, pretrained_dir=None, stop_at=None, devices=None):
        seen.append((cfg.method, cfg.target.kind, cfg.target.eps, cfg.target.exp_base,
                     cfg.noise.kind, cfg.noise.rate))
        acc = 0.9 - 0.2 * cfg.noise.rate + 0.05 * (cfg.target.kind == "proselflc")
        history = [{"step": s, "test_accuracy": acc, "dynamics/noisy_fitted": 0.1 * s}
                   for s in (1, 2)]
        return {"final_test_accuracy": acc, "history": history}

    monkeypatch.setattr("sslj.procedures.standard.run", fake_train)
    md = reproduce.run_table("proselflc_table4", "embedded", 1, str(tmp_path))
    table = TABLES["proselflc_table4"]
    assert len(seen) == 6 * 6
    assert {s[1] for s in seen} == {"cce", "ls", "cp", "boot_soft", "boot_hard", "proselflc"}
    assert all(s[0] == "supervised" for s in seen)
    assert {(s[4], s[5]) for s in seen} == {("asymmetric", r) for r in (0.2, 0.3, 0.4)} | {
        ("symmetric", r) for r in (0.2, 0.4, 0.6)}
    assert {s[2] for s in seen if s[1] == "boot_hard"} == {0.2}
    assert {s[2] for s in seen if s[1] in ("ls", "cp", "boot_soft")} == {0.5}
    # accuracy reported (not error), with the paper's number per cell
    row = next(line for line in md.splitlines() if line.startswith("| proselflc"))
    assert row.split("|")[3].strip() == "89.00 (68.5)"  # asym 0.3: 0.9 - 0.06 + 0.05
    assert table.paper["cce"]["sym0.6"] == 37.9
    assert (tmp_path / "proselflc_table4_embedded_dynamics.png").stat().st_size > 1000

    seen.clear()
    md = reproduce.run_table("proselflc_table5", "embedded", 1, str(tmp_path / "t5"))
    b_values = sorted({s[3] for s in seen if s[1] == "proselflc"})
    assert b_values == [8.0, 10.0, 12.0, 14.0, 16.0]
    assert sorted({s[2] for s in seen if s[1] == "cp"}) == [0.125, 0.25, 0.5]
    assert ("none", 0.0) in {(s[4], s[5]) for s in seen}
    assert "(47.7)" in next(line for line in md.splitlines() if line.startswith("| proselflc_B8"))


def test_proselflc_cifar100_configs_validate_and_split_80_20():
    from experiments.configs import label_noise, proselflc_cifar100
    from sslj.config import for_method, parse_methods, validate
    from sslj.data.splits import class_mismatch

    c = proselflc_cifar100.get_config()
    assert (c.model, c.num_steps, c.batch_size) == ("resnet44", 30_000, 256)
    assert tuple(c.optimizer.decay_steps) == (15_000, 22_000)
    for m in parse_methods(c.compare):
        validate(for_method(c, m), device_count=1)
    one = proselflc_cifar100.get_config("proselflc,sym0.6")
    assert (one.target.kind, one.noise.kind, one.noise.rate, one.compare) == (
        "proselflc", "symmetric", 0.6, "")
    sp = class_mismatch(np.repeat(np.arange(100), 500), seen_classes=c.split.seen_classes,
                        mismatch_ratio=0.0, labels_per_class=c.split.labels_per_class,
                        unlabeled_size=0, num_validation=c.split.num_validation)
    assert (len(sp.labeled), len(sp.unlabeled), len(sp.validation)) == (40_000, 0, 10_000)
    e = label_noise.get_config("boot_hard,asym0.3")
    validate(e, device_count=1)
    assert (e.target.eps, e.noise.kind) == (0.2, "asymmetric")


def test_spl_tables_share_pretraining_and_wire_ablations(tmp_path, monkeypatch):
    import json
    import os

    from sslj import config as config_lib

    base_runs, spl_runs = [], []

    def fake_train(cfg, workdir, pretrained_dir=None, stop_at=None, devices=None):
        base_runs.append((cfg.method, cfg.split.labels_per_class, workdir))
        os.makedirs(workdir, exist_ok=True)
        r = {"test_accuracy_at_best_val": 0.8, "method": cfg.method}
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(r, f)
        return r

    def fake_spl(cfg, workdir, pretrained_dir=None, stop_at=None, devices=None):
        config_lib.validate(cfg)
        spl_runs.append((config_lib.run_name(cfg), dict(cfg.spl), pretrained_dir,
                         cfg.split.labels_per_class))
        acc = 0.85 - 0.5 * (not cfg.spl.pretrain)
        return {"test_accuracy_at_best_val": acc, "method": config_lib.run_name(cfg),
                "spl": {"safe_ratio": 0.3, "rounds": 1,
                        "layer_ratios_identified": {"Conv_0/kernel": 0.5},
                        "layer_ratios_final": {"Conv_0/kernel": 0.5}}}

    monkeypatch.setattr("sslj.procedures.standard.run", fake_train)
    monkeypatch.setattr("sslj.procedures.spl.run", fake_spl)
    md = reproduce.run_table("spl_table3", "embedded", 1, str(tmp_path))
    # one base (VAT) run per column; every SPL row but w/o pre-training reuses it
    assert sorted(b[1] for b in base_runs) == [5, 10, 20]
    base_dir = {b[1]: b[2] for b in base_runs}
    assert len(spl_runs) == 7 * 3
    for name, spl, pre, labels in spl_runs:
        assert name == "vat+spl"
        assert pre == (base_dir[labels] if spl["pretrain"] else None)
    rows = {(s[1]["identify"], s[1]["inner_steps"], s[1]["outer_steps"], s[1]["pretrain"])
            for s in spl_runs}
    assert ("none", 40, 40, True) in rows and ("random", 40, 40, True) in rows
    assert ("magnitude", 0, 0, True) in rows and ("magnitude", 40, 40, False) in rows
    line = next(x for x in md.splitlines() if x.startswith("| w/o pre-training"))
    assert "35.00 (32.5)" in line
    # Fig. 3: the p sweep trains the base row once, SPL once per p, and plots Fig. 4
    base_runs.clear(), spl_runs.clear()
    reproduce.run_table("spl_fig3", "embedded", 1, str(tmp_path / "f3"))
    assert len(base_runs) == 1
    # p = 0.1 ... 1.0 and Eq. 3's p (safe_ratio 0: the procedure computes it)
    assert sorted(s[1]["safe_ratio"] for s in spl_runs) == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    assert (tmp_path / "f3" / "spl_fig3_embedded_layer_ratios.png").stat().st_size > 1000


def test_spl_full_scale_configs_validate_and_split():
    import importlib

    from sslj import config as config_lib
    from sslj.data import splits as splits_lib

    for name, seen, labels in (("spl_cifar10", 6, 400), ("spl_cifar100", 50, 100),
                               ("spl_tinyimagenet", 100, 100)):
        mod = importlib.import_module(f"experiments.configs.{name}")
        c = mod.get_config()
        runs = config_lib.parse_methods(c.compare)
        assert "vat+spl" in runs and "supervised" in runs
        for run in runs:
            cfg = config_lib.for_method(c, run)
            cfg.batch_size = cfg.unlabeled_batch_size = 48
            cfg.eval_batch_size = 1000
            cfg.spl.inner_batch_size = 96
            config_lib.validate(cfg, device_count=8)
        assert c.split.protocol == "ds3l" and len(c.split.seen_classes) == seen
        assert c.split.labels_per_class == labels
        one = mod.get_config("vat+spl")
        assert one.compare == "vat+spl" and one.method == "vat"
    # the DS3L split at CIFAR-10 scale: 400 labels / seen class, int(20000 * 0.7) / 6
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 5000)
    rng.shuffle(labels)
    sp = splits_lib.class_mismatch(labels, seen_classes=(2, 3, 4, 5, 6, 7), mismatch_ratio=0.3,
                                   labels_per_class=400, unlabeled_size=20000,
                                   num_validation=5000, protocol="ds3l")
    assert len(sp.labeled) == 2400 and len(sp.val_v1) == 3500 and len(sp.val_v2) == 1500
    seen_unl = np.isin(labels[sp.unlabeled], (2, 3, 4, 5, 6, 7)).sum()
    assert seen_unl == 6 * (14000 // 6)


def test_fixmatch_and_report_tables_wire_columns_rows_and_setups(tmp_path, monkeypatch):
    """FixMatch / MixMatch by label count, and the SSL report's tables: each run gets its
    column's data and labels, its row's method and threshold and its paper's training
    setup; the embedded scale has twins only of the CIFAR-10 columns."""
    import pytest

    seen = []

    def fake_train(cfg, workdir, pretrained_dir=None, stop_at=None, devices=None):
        seen.append(cfg)
        return {"test_accuracy_at_best_val": 0.5, "median_ema_test_accuracy": 0.5}

    monkeypatch.setattr("sslj.procedures.standard.run", fake_train)
    reproduce.run_table("fixmatch_cifar10", "full", 1, str(tmp_path / "fm"))
    by = {(c.method, c.split.labels_per_class): c for c in seen}
    assert set(by) == {(m, n) for m in ("supervised", "fixmatch", "mixmatch") for n in (4, 25, 400)}
    fm, mm = by[("fixmatch", 25)], by[("mixmatch", 25)]
    assert (fm.unlabeled_batch_size, fm.optimizer.name, fm.optimizer.lr) == (448, "nesterov", 0.03)
    assert (mm.unlabeled_batch_size, mm.optimizer.name, mm.optimizer.lr) == (64, "adam", 0.002)
    assert mm.split.unlabeled_size == 50_000 - 250 - 5000 and mm.mixmatch.weight == 75.0
    seen.clear()
    md = reproduce.run_table("fixmatch_cifar10", "embedded", 1, str(tmp_path / "fm_e"))
    assert sorted({c.split.labels_per_class for c in seen}) == [4, 10, 50]
    assert {c.data.source for c in seen} == {"mnist5k"} and "(5.1)" in md  # the paper's 5.07

    seen.clear()
    reproduce.run_table("ssl_report_table3", "full", 1, str(tmp_path / "t3"),
                        columns=["cifar100-2500"])
    assert len(seen) == 3
    assert {c.fixmatch.threshold for c in seen} == {0.95, 0.75, 0.6}
    for c in seen:
        assert (c.method, c.data.source, c.split.labels_per_class) == (
            "fixmatch_attention", "tfds:cifar100", 25)
        assert c.model_kwargs.attention and c.unlabeled_batch_size == 448
    seen.clear()
    reproduce.run_table("ssl_report_table1", "full", 1, str(tmp_path / "t1"),
                        columns=["cifar10-250"], rows=["tau=0.6"])
    (c,) = seen
    assert c.method == "pseudo_label_accumulated" and not c.model_kwargs.attention
    assert c.pseudo_label_accumulated.threshold == 0.6 and c.unlabeled_batch_size == 64
    seen.clear()
    reproduce.run_table("ssl_report_table3", "embedded", 1, str(tmp_path / "t3e"))
    assert sorted({c.split.labels_per_class for c in seen}) == [10, 50]
    assert all(c.model_kwargs.attention and c.data.source == "mnist5k" for c in seen)
    with pytest.raises(SystemExit, match="no embedded twin"):
        reproduce.run_table("ssl_report_table3", "embedded", 1, str(tmp_path / "x"),
                            columns=["cifar100-2500"])
