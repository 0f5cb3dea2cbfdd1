"""Training engine on tiny volumes: splits, labels, loss decreases, fine-tuning freezes what it must."""
import numpy as np
import pytest
import torch

from bids_qc.grading import LABEL_SCHEMES, LABEL_SCHEMES_PAPER, binary_labels, detector_label
from bids_qc.networks import Conv5FC3
from bids_qc.preprocessing import ModelGrid
from bids_qc.record import DETECTORS
from bids_qc.training.cache import CacheEntry
from bids_qc.training.data import SimulatedSet
from bids_qc.training.finetune import cross_validated_finetune, set_finetune_mode, train_head
from bids_qc.training.loop import class_weights, labels_for, selection_score, train_detectors
from bids_qc.training.splits import holdout_split, kfold_by_subject

TINY = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))


def tiny_entries(n=6, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, 16)] * 3, indexing="ij")
    r = np.sqrt(sum(g**2 for g in grid))
    entries = []
    for i in range(n):
        clean = (np.where(r < 0.8, 150, 0) + np.where(r < 0.45, 90, 0)
                 + rng.normal(0, 2, r.shape)).clip(0).astype(np.float16)
        blur = lambda v, s: np.stack([np.roll(v, s, axis=0) * 0.5 + v * 0.5] * 2).astype(np.float16)  # noqa: E731
        entries.append(CacheEntry(subject=f"s{i:02d}", path=None, source="synthetic", clean=clean,
                                  motion={1: blur(clean, 1), 2: blur(clean, 3)}))
    return entries


def test_kfold_never_puts_a_subject_on_both_sides():
    subjects = [f"s{i}" for i in range(23)] * 2  # two scans per subject
    folds = kfold_by_subject(subjects, 5, seed=1)
    seen_val = []
    for train, val in folds:
        assert not set(train) & set(val)
        assert set(train) | set(val) == set(subjects)
        seen_val += val
    assert sorted(seen_val) == sorted(set(subjects))


def test_holdout_split_is_disjoint_and_seeded():
    subjects = [f"s{i}" for i in range(30)]
    pool, test = holdout_split(subjects, 6, seed=2)
    assert len(test) == 6 and not set(pool) & set(test)
    assert holdout_split(subjects, 6, seed=2) == (pool, test)
    assert holdout_split(subjects, 6, seed=3)[1] != test


def test_label_schemes():
    assert [detector_label("motion_moderate", g) for g in (0, 1, 2)] == [0, 1, None]
    assert [detector_label("motion_severe", g) for g in (0, 1, 2)] == [0, 0, 1]
    assert [detector_label("noise_severe", g, LABEL_SCHEMES_PAPER) for g in (0, 1, 2)] == [0, 1, 1]
    grades = torch.tensor([[0, 1, 2], [2, 0, 1]])
    assert labels_for("contrast_severe", grades).tolist() == [1, 0]
    assert labels_for("motion_moderate", grades).tolist() == [0, -1]
    assert set(LABEL_SCHEMES) == set(DETECTORS)
    assert binary_labels("noise_moderate", [0, 1, 2, None, float("nan")]).tolist() == [0, 1, -1, -1, -1]


def test_class_weights_balance_classes():
    w = class_weights(np.array([0, 0, 0, 1, -1]))
    assert w[1] / w[0] == pytest.approx(3.0)


def test_simulated_set_is_reproducible_and_covers_grades():
    ds = SimulatedSet(tiny_entries(3), n_per_subject=20, seed=4, grid=TINY)
    x1, g1 = ds[5]
    x2, g2 = ds[5]
    assert torch.equal(x1, x2) and torch.equal(g1, g2)
    assert x1.shape == (1, 16, 16, 16) and 0 <= x1.min() and x1.max() <= 1
    grades = np.array([[v for v in ds.grades(i).values()] for i in range(len(ds))])
    assert set(np.unique(grades)) == {0, 1, 2}
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i][1], g) for i, g in [(j, ds.__class__.__getitem__(ds, j)[1])
                                                          for j in range(5)]) or True


def test_tiny_training_run_reduces_loss():
    torch.set_num_threads(1)
    entries = tiny_entries(6)
    train = SimulatedSet(entries[:4], n_per_subject=12, seed=0, grid=TINY)
    val = SimulatedSet(entries[4:], n_per_subject=12, seed=9, grid=TINY)
    states = train_detectors(["noise_severe"], train, val, input_shape=TINY.shape, epochs=6,
                             batch_size=6, lr=1e-3, seed=0)
    hist = states["noise_severe"].history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert states["noise_severe"].best_epoch >= 1
    assert min(h["val_loss"] for h in hist) < hist[0]["val_loss"] + 1e-9


def _tiny_run(ema_decay, init=None, epochs=2, select_on="loss"):
    torch.set_num_threads(1)
    entries = tiny_entries(6)
    train = SimulatedSet(entries[:4], n_per_subject=6, seed=0, grid=TINY)
    val = SimulatedSet(entries[4:], n_per_subject=6, seed=9, grid=TINY)
    return train_detectors(["noise_severe"], train, val, input_shape=TINY.shape, epochs=epochs,
                           batch_size=6, lr=1e-3, seed=0, init=init,
                           ema_decay=ema_decay, select_on=select_on)["noise_severe"]


def test_weight_average_is_what_is_validated_and_kept():
    torch.manual_seed(3)
    start = Conv5FC3(TINY.shape)
    # decay 1: the average never moves from the initial weights, whatever the optimiser does
    frozen = _tiny_run(1.0, init={"noise_severe": start})
    assert_same_weights(start, frozen.net)
    assert [h["epoch"] for h in frozen.history] == [0, 1, 2]  # a warm start scores its start first
    assert len({h["val_loss"] for h in frozen.history}) == 1 and frozen.best_epoch == 0
    # decay 0: the average is the latest weights, so the run is the plain run
    plain, latest = _tiny_run(None), _tiny_run(0.0)
    assert [h["val_loss"] for h in plain.history] == [h["val_loss"] for h in latest.history]
    assert_same_weights(plain.net, latest.net)
    # in between: after one epoch the average lies strictly between the start and the raw
    # trained weights (decay 0: the average is the raw weights; the training is the same)
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    w0 = flat(start)
    between = _tiny_run(0.9, init={"noise_severe": start}, epochs=1)
    w_avg = flat(between.validated)
    w_raw = flat(_tiny_run(0.0, init={"noise_severe": start}, epochs=1).validated)
    assert 0 < (w_avg - w0).norm() < (w_raw - w0).norm()
    # and what is kept is the validated network of the best epoch (start or average)
    assert_same_weights(start if between.best_epoch == 0 else between.validated, between.net)


def test_selection_keeps_the_best_epoch_by_the_chosen_criterion():
    by = {}
    for criterion in ("loss", "auc"):
        by[criterion] = st = _tiny_run(None, epochs=4, select_on=criterion)
        best = min(st.history, key=lambda h: selection_score(h, criterion))
        assert st.best_epoch == best["epoch"]
    # same training either way (selection only chooses among the same epochs)
    assert [h["val_loss"] for h in by["loss"].history] == [h["val_loss"] for h in by["auc"].history]
    assert by["auc"].history[by["auc"].best_epoch - 1]["val_auc"] == max(h["val_auc"] for h in by["auc"].history)


def test_selection_score_orders_auc_then_loss():
    high, low = {"val_auc": 0.9, "val_loss": 0.5}, {"val_auc": 0.8, "val_loss": 0.1}
    assert selection_score(high, "auc") < selection_score(low, "auc")
    assert selection_score(low, "loss") < selection_score(high, "loss")
    tie = {"val_auc": 0.9, "val_loss": 0.4}
    assert selection_score(tie, "auc") < selection_score(high, "auc")
    undefined = {"val_auc": float("nan"), "val_loss": 0.0}
    assert selection_score(low, "auc") < selection_score(undefined, "auc")
    with pytest.raises(ValueError, match="select_on"):
        train_detectors(["noise_severe"], None, None, input_shape=TINY.shape, select_on="accuracy")


def clean_or_noisy(entry, noisy: int, rng) -> np.ndarray:
    """A tiny entry's clean volume, with Rician noise (sigma 40) when ``noisy``, min-max scaled."""
    v = entry.clean.astype(np.float32)
    if noisy:
        v = np.sqrt((v + rng.normal(0, 40, v.shape)) ** 2 + rng.normal(0, 40, v.shape) ** 2)
    return (v - v.min()) / (v.max() - v.min())


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_finetuning_leaves_frozen_parameters_and_bn_statistics_byte_identical():
    torch.manual_seed(0)
    net = Conv5FC3(TINY.shape)
    with torch.no_grad():  # give BN non-trivial running statistics
        net.train()
        net(torch.rand(8, 1, *TINY.shape))
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    volumes = torch.rand(12, 1, *TINY.shape)
    labels = np.array([0, 1] * 6)
    subjects = [f"s{i // 2}" for i in range(12)]
    result = cross_validated_finetune(net, volumes, labels, subjects, k=3, epochs=3, lr=1e-3,
                                      threshold=0.5)
    fc_keys = {k for k in before if k.startswith("classifier")}
    for tuned in result["members"]:
        after = tuned.state_dict()
        for key, value in before.items():
            if key in fc_keys:
                continue
            assert torch.equal(after[key], value), f"{key} moved during fine-tuning"
        assert any(not torch.equal(after[k], before[k]) for k in fc_keys)
    # the parent network itself is untouched
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
    assert np.isfinite(result["oof_probabilities"]).all()


def test_finetune_mode_keeps_batchnorm_in_eval():
    net = Conv5FC3(TINY.shape)
    set_finetune_mode(net)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bns and not any(m.training for m in bns)
    assert net.classifier.training


def test_train_head_learns_separable_features():
    torch.manual_seed(0)
    net = Conv5FC3(TINY.shape)
    feats = torch.randn(40, 128, 1, 1, 1)
    labels = (feats[:, 0, 0, 0, 0] > 0).long()
    tuned, _ = train_head(net, feats, labels, epochs=40, lr=1e-3)
    tuned.eval()
    with torch.no_grad():
        acc = (tuned.classifier(feats).argmax(1) == labels).float().mean()
    assert acc > 0.8


def test_finetuning_repairs_a_miscalibrated_detector():
    """A detector whose head always says 'artefact' (b.acc 0.5) must improve after fine-tuning."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    entries = tiny_entries(12, seed=1)
    volumes, labels, subjects = [], [], []
    for _i, e in enumerate(entries):
        for noisy in (0, 1):
            volumes.append(clean_or_noisy(e, noisy, rng))
            labels.append(noisy)
            subjects.append(e.subject)
    volumes = torch.from_numpy(np.stack(volumes).astype(np.float32))[:, None]
    net = Conv5FC3(TINY.shape)
    with torch.no_grad():  # calibrate BatchNorm statistics on the data, as a trained net would have
        net.train()
        for _ in range(30):
            net(volumes)
    net.eval()
    with torch.no_grad():  # mis-calibrate: the last layer always prefers class 1
        net.fc_layers()[-1].bias.copy_(torch.tensor([-1.5, 1.5]))
    result = cross_validated_finetune(net, volumes, np.array(labels), subjects, k=3, epochs=40, lr=1e-3,
                                      threshold=0.5)
    assert result["before"]["balanced_accuracy"] == pytest.approx(0.5)
    assert result["after"]["balanced_accuracy"] >= 0.8


def test_warm_start_refuses_another_split():
    """Continuing a model is only honest on its own split: held-out and validation subjects of
    the new run must not have been trained on by the starting model."""
    from bids_qc.cli.train import warm_start_problems
    from bids_qc.preprocessing import ModelGrid
    from bids_qc.training.splits import holdout_split, kfold_by_subject

    subjects = [f"S{i:02d}" for i in range(30)]
    pool, test = holdout_split(subjects, 5, seed=0)
    folds = kfold_by_subject(pool, 5, seed=0)
    grid = ModelGrid()
    manifest = {"input": grid.to_dict(), "training": {"test_subjects": test, "folds": [
        {"fold": 0, "train_subjects": folds[0][0], "val_subjects": folds[0][1]}]}}
    assert warm_start_problems(manifest, test, folds, [0], grid) == []
    other_pool, other_test = holdout_split(subjects, 5, seed=1)
    assert any("held-out" in p for p in warm_start_problems(manifest, other_test, folds, [0], grid))
    other_folds = kfold_by_subject(pool, 5, seed=1)
    assert any("fold 0" in p for p in warm_start_problems(manifest, test, other_folds, [0], grid))
    assert any("no fold 1" in p for p in warm_start_problems(manifest, test, folds, [0, 1], grid))
    small = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))
    assert any("grid" in p for p in warm_start_problems(manifest, test, folds, [0], small))
    assert any("2 mm" in p for p in warm_start_problems(manifest, test, folds, [0], grid.at_spacing(2.0)))


def test_subject_bootstrap_interval_widens_when_errors_cluster_in_subjects():
    """Images of one subject are not independent: with the same 80 % accuracy, errors that all
    fall on a few subjects must give a wider interval than errors spread over every subject."""
    from bids_qc.training.metrics import subject_bootstrap_ci

    subjects = np.repeat(np.arange(20), 10)
    labels = np.tile([0, 1], 100)
    spread = labels.copy()
    spread[np.arange(20) * 10] ^= 1          # one wrong image per subject
    spread[np.arange(20) * 10 + 1] ^= 1      # and a second one
    clustered = labels.copy()
    clustered[subjects < 4] ^= 1              # four subjects entirely wrong

    def width(pred):
        lo, hi = subject_bootstrap_ci(lambda r: float((pred[r] == labels[r]).mean()), subjects,
                                      n_resamples=500)
        assert lo <= float((pred == labels).mean()) <= hi
        return hi - lo

    assert width(spread) < 0.02 < width(clustered)


class _GradedVolumes(torch.utils.data.Dataset):
    """(x, grades) items, as GeneratedSet gives: noise grade 1 = Rician noise, else clean."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        entries = tiny_entries(n, seed=seed)
        self.items = []
        for i, e in enumerate(entries):
            v = clean_or_noisy(e, i % 2, rng)
            self.items.append((torch.from_numpy(v.astype(np.float32))[None], torch.tensor([0, i % 2, 0])))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_train_heads_trains_each_detector_head_on_its_own_labels_and_leaves_the_convolutions():
    from bids_qc.training.finetune import train_heads

    torch.manual_seed(0)
    train, val = _GradedVolumes(24, seed=1), _GradedVolumes(12, seed=2)
    init = {}
    for det in ("noise_moderate", "motion_moderate"):
        net = Conv5FC3(TINY.shape)
        with torch.no_grad():  # BatchNorm statistics of the data, then a head that always says 1
            net.train()
            for _ in range(20):
                net(torch.stack([x for x, _ in train.items]))
            net.eval()
            net.fc_layers()[-1].bias.copy_(torch.tensor([-1.5, 1.5]))
        init[det] = net
    before = {d: {k: v.clone() for k, v in n.state_dict().items()} for d, n in init.items()}
    nets, logs = train_heads(init, train, val, LABEL_SCHEMES, epochs=40, lr=1e-3)
    for det, net in nets.items():
        for key, value in net.state_dict().items():
            if not key.startswith("classifier"):
                assert torch.equal(value, before[det][key]), f"{det}: {key} moved"
        assert torch.equal(init[det].fc_layers()[-1].bias, before[det]["classifier.6.bias"])
    # noise is graded in these images: its head learns; motion is graded 0 everywhere (one class)
    assert logs["noise_moderate"]["val_auc_after"] >= 0.8
    assert logs["noise_moderate"]["n_train"] == 24 and logs["noise_moderate"]["best_epoch"] >= 1


def test_grade_probabilities_from_the_command_line():
    import pytest

    from bids_qc.training.data import GRADE_PROBS, parse_grade_probs

    assert parse_grade_probs(None) == GRADE_PROBS
    assert parse_grade_probs("0.3,0.1,0.6") == (0.3, 0.1, 0.6)
    for bad in ("0.5,0.5", "0.5,0.6,0.1", "-0.1,0.5,0.6"):
        with pytest.raises(ValueError, match="sum to 1"):
            parse_grade_probs(bad)
