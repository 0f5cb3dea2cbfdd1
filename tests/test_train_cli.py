"""``bids-qc-train`` end to end on six synthetic heads: a first run, then a warm start that trains
one detector further on new draws and leaves the other five byte-identical."""
import json
import shutil

import nibabel as nib
import pytest
from conftest import synthetic_head, write_dataset_description
from safetensors.numpy import load_file

from bids_qc.cli.calibrate import main as calibrate_main
from bids_qc.cli.train import main as train_main
from bids_qc.models import load_bundle
from bids_qc.preprocessing import CLIPPED_MINMAX, MINMAX
from bids_qc.scan import assess_scan
from bids_qc.training.cache import cache_settings

COMMON = ["--n-test", "2", "--k", "2", "--folds", "0", "--epochs", "1",
          "--samples-per-subject", "1", "--val-samples-per-subject", "2",
          "--test-samples-per-subject", "2", "--motion-variants", "1", "--nprocs", "1",
          "--threads", "1", "--no-calibrate"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    bids = root / "bids"
    write_dataset_description(bids)
    for i in range(6):
        path = bids / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(synthetic_head(seed=10 + i), path)
    model = root / "m1"
    assert train_main([str(bids), str(model), "--cache-dir", str(root / "cache"), *COMMON]) == 0
    return root, bids, model


def weights(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    return {name: load_file(folder / name) for name in manifest["files"] if name.endswith(".safetensors")}


def test_first_run_writes_a_model_folder_with_its_split(first_run):
    _, _, model = first_run
    manifest = json.loads((model / "manifest.json").read_text())
    training = manifest["training"]
    assert manifest["trained"] is True and manifest["draw_seed"] == manifest["seed"] == 0
    assert training["motion_timing"] == "uniform"  # the default: how every shipped model was trained
    fold = training["folds"][0]
    assert not set(training["test_subjects"]) & set(fold["train_subjects"] + fold["val_subjects"])
    assert set(manifest["metrics"]["heldout_simulated"]["detectors"]) == set(manifest["detectors"])


def test_warm_start_trains_only_what_it_is_told_on_new_draws(first_run):
    root, bids, model = first_run
    out = root / "m2"
    rc = train_main([str(bids), str(out), "--cache-dir", str(root / "cache"), *COMMON,
                     "--init-from", str(model), "--train-only", "motion_severe", "--draw-seed", "7",
                     "--ema-decay", "0.9", "--tail-augment", "0.5,2"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["draw_seed"] == 7 and manifest["training"]["warm_start"] == str(model)
    assert manifest["training"]["ema_decay"] == 0.9 and "EMA" in manifest["training"]["selection"]
    assert manifest["training"]["tail_augment"] == [0.5, 2.0]
    assert "[0.5, 2]" in (out / "MODEL_CARD.md").read_text()
    assert json.loads((model / "manifest.json").read_text())["training"]["tail_augment"] is None
    kept = manifest["training"]["folds"][0]["warm_start"]["detectors"]
    assert all(kept[d] == {"trained": False, "kept": "start"} for d in kept if d != "motion_severe")
    assert kept["motion_severe"]["trained"] and kept["motion_severe"]["start_val_loss"] > 0
    before, after = weights(model), weights(out)
    for name, tensors in before.items():
        for key, value in tensors.items():
            if not key.startswith("motion_severe") and "motion_severe" not in name:
                assert (after[name][key] == value).all(), f"{name}:{key} changed"


def test_warm_start_on_another_split_is_refused(first_run):
    root, bids, model = first_run
    rc = train_main([str(bids), str(root / "m3"), "--cache-dir", str(root / "cache"), *COMMON,
                     "--seed", "1", "--init-from", str(model)])
    assert rc == 2 and not (root / "m3").exists()


def test_warm_start_scores_the_starting_model_on_this_runs_validation_images(first_run, tmp_path):
    """The starting model's validation loss is measured again on this run's (here larger)
    validation set, not copied from its manifest, so the comparison is like for like."""
    root, bids, model = first_run
    start = tmp_path / "start"
    shutil.copytree(model, start)
    manifest = json.loads((start / "manifest.json").read_text())
    manifest["training"]["folds"][0]["val_at_best"]["motion_severe"]["val_loss"] = 0.0
    (start / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "m4"
    rc = train_main([str(bids), str(out), "--cache-dir", str(root / "cache"), *COMMON,
                     "--val-samples-per-subject", "4", "--init-from", str(start),
                     "--train-only", "motion_severe", "--draw-seed", "3"])
    assert rc == 0
    fold = json.loads((out / "manifest.json").read_text())["training"]["folds"][0]
    outcome = fold["warm_start"]["detectors"]["motion_severe"]
    history = fold["history"]["motion_severe"]
    # epoch 0 is the starting model, scored on this run's images (not the planted 0.0)
    assert history[0]["epoch"] == 0 and history[0]["val_loss"] == outcome["start_val_loss"] > 0.0
    # what was kept is the lowest of the starting and trained epochs, with its own figures
    best = min(history, key=lambda h: h["val_loss"])
    assert outcome["best_epoch"] == best["epoch"] and outcome["best_val_loss"] == best["val_loss"]
    assert outcome["start_val_auc"] == history[0]["val_auc"]
    assert outcome["kept"] == ("start" if best["epoch"] == 0 else "continued")
    assert fold["val_at_best"]["motion_severe"] == best


def test_a_new_normalisation_is_recorded_and_needs_all_six_detectors_trained(first_run):
    root, bids, model = first_run
    cache, clipped = str(root / "cache"), ["--normalisation", "clipped-minmax"]
    refused = root / "m_clip_one"
    assert train_main([str(bids), str(refused), "--cache-dir", cache, *COMMON, *clipped,
                       "--init-from", str(model), "--train-only", "motion_severe"]) == 2
    assert not refused.exists()
    out = root / "m_clip"
    assert train_main([str(bids), str(out), "--cache-dir", cache, *COMMON, *clipped,
                       "--init-from", str(model), "--clip-augment", "0.9,1.1"]) == 0
    bundle = load_bundle(out)
    assert bundle.grid.normalisation == CLIPPED_MINMAX
    assert load_bundle(model).grid.normalisation == MINMAX
    card = (out / "MODEL_CARD.md").read_text()
    assert CLIPPED_MINMAX in card and "clip level of the normalisation moved" in card
    assert json.loads((out / "manifest.json").read_text())["training"]["clip_augment"] == [0.9, 1.1]


def test_a_clip_augment_without_a_clip_level_is_refused_before_any_work(tmp_path, caplog):
    assert train_main([str(tmp_path / "bids"), str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c"),
                       "--clip-augment", "0.9,1.1"]) == 2
    assert "--clip-augment needs --normalisation clipped-minmax" in caplog.text
    assert not (tmp_path / "c").exists() and not (tmp_path / "m").exists()


def test_calibration_rebuilds_the_training_runs_test_images(first_run):
    """bids-qc-calibrate re-scores a model on held-out images rebuilt from the run's seed: at
    threshold 0.5 it must reproduce the training run's own held-out figures exactly. On the 5 mm
    grid (the same box, 1/8 of the voxels: the test is about rebuilding the images, not their
    size; calibration follows the model's grid as the app does)."""
    root, bids, _ = first_run
    model = root / "m_fp32"
    assert train_main([str(bids), str(model), "--cache-dir", str(root / "cache"), *COMMON,
                       "--no-half", "--motion-timing", "torchio", "--grid-spacing", "5"]) == 0
    trained = json.loads((model / "manifest.json").read_text())["metrics"]["heldout_simulated"]
    assert calibrate_main([str(model), str(bids), "--cache-dir", str(root / "cache"),
                           "--val-samples-per-subject", "2", "--test-samples-per-subject", "2",
                           "--seed", "0", "--threads", "1"]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["metrics"]["heldout_simulated_at_0.5"] == trained
    assert set(manifest["training"]["calibration"]["detectors"]) <= set(manifest["detectors"])
    assert (manifest["training"]["motion_timing"], manifest["training"]["motion_variants"]) == ("torchio", 1)
    assert load_bundle(model).grid.spacing == 5.0
    # from a new cache too: calibration caches with the run's motion variants and timing
    assert calibrate_main([str(model), str(bids), "--cache-dir", str(root / "fresh_cache"),
                           "--val-samples-per-subject", "2", "--test-samples-per-subject", "2",
                           "--seed", "0", "--threads", "1"]) == 0
    again = json.loads((model / "manifest.json").read_text())["metrics"]["heldout_simulated_at_0.5"]
    assert again == trained


def test_cache_settings_of_folders_that_did_not_record_them():
    old = {"command": "bids-qc-train ixi out --cache-dir c --motion-variants 8 --seed 0", "training": {}}
    assert cache_settings(old) == (8, "uniform")
    assert cache_settings({"command": "bids-qc-train ixi out --motion-variants=5"}) == (5, "uniform")
    assert cache_settings({"command": "bids-qc-train ixi out"}) == (3, "uniform")
    new = {"command": "", "training": {"motion_variants": 2, "motion_timing": "torchio"}}
    assert cache_settings(new) == (2, "torchio")


@pytest.mark.parametrize("value", ["2,0.5", "0,1", "1", "a,b"])
def test_a_bad_tail_range_is_refused_before_any_work(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main([str(tmp_path / "bids"), str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c"),
                    "--tail-augment", value])
    assert exit_info.value.code == 2 and "--tail-augment" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_calibration_for_the_tiers_records_its_objective_and_the_youden_points(first_run, tmp_path):
    root, bids, model = first_run
    copy = tmp_path / "m"
    shutil.copytree(model, copy)
    assert calibrate_main([str(copy), str(bids), "--cache-dir", str(root / "cache"),
                           "--val-samples-per-subject", "2", "--test-samples-per-subject", "2",
                           "--seed", "0", "--threads", "1", "--objective", "tiers"]) == 0
    manifest = json.loads((copy / "manifest.json").read_text())
    calibration = manifest["training"]["calibration"]
    assert calibration["objective"] == "tiers" and "--objective tiers" in calibration["command"]
    for det, c in calibration["detectors"].items():
        assert 0.05 <= c["youden_threshold"] <= 0.95
        assert manifest["detectors"][det]["threshold"] == c["threshold"]
    assert "Youden point" in (copy / "MODEL_CARD.md").read_text()
    load_bundle(copy)  # weights untouched: checksums still hold


def test_training_can_calibrate_for_the_tiers_itself(first_run, tmp_path):
    root, bids, _ = first_run
    out = tmp_path / "m"
    assert train_main([str(bids), str(out), "--cache-dir", str(root / "cache"), *COMMON,
                       "--calibrate", "--calibration-objective", "tiers"]) == 0
    calibration = json.loads((out / "manifest.json").read_text())["training"]["calibration"]
    assert calibration["objective"] == "tiers"
    assert all("youden_threshold" in c for c in calibration["detectors"].values())


def test_grid_spacing_is_trained_recorded_and_loaded(first_run, tmp_path):
    """``--grid-spacing 5``: the same MNI box at 32x40x32; the manifest records the geometry, the
    cache gets its own folder, and the folder loads as networks of that input size."""
    root, bids, _ = first_run
    model = tmp_path / "coarse"
    assert train_main([str(bids), str(model), "--cache-dir", str(root / "cache"), *COMMON,
                       "--grid-spacing", "5"]) == 0
    bundle = load_bundle(model)
    assert bundle.grid.shape == (32, 40, 32) and bundle.grid.spacing == 5.0
    assert bundle.members[0]["motion_moderate"].input_shape == (32, 40, 32)
    record = assess_scan(next(bids.glob("sub-00/anat/*_T1w.nii.gz")), bundle, want_images=False).record
    assert record["status"] == "ok" and record["preprocessing"]["model_grid"]["shape"] == [32, 40, 32]
    assert {p.name.split("_")[1] for p in (root / "cache").iterdir()} == {
        "grid-32x40x32-5mm", "grid-64x80x64-2.5mm"}


def test_reinit_starts_the_listed_detector_afresh_and_copies_the_others(first_run, tmp_path):
    """``--reinit``: the listed detector is trained from fresh weights (its starting weights are
    neither scored nor kept); the others stay byte-identical."""
    root, bids, model = first_run
    out = tmp_path / "fresh"
    assert train_main([str(bids), str(out), "--cache-dir", str(root / "cache"), *COMMON,
                       "--init-from", str(model), "--train-only", "noise_severe", "--reinit"]) == 0
    fold = json.loads((out / "manifest.json").read_text())["training"]["folds"][0]
    kept = fold["warm_start"]["detectors"]
    assert kept["noise_severe"]["kept"] == "reinitialised" and kept["motion_severe"]["kept"] == "start"
    assert fold["history"]["noise_severe"][0]["epoch"] == 1  # no epoch 0: the start is not scored
    before, after = weights(model), weights(out)
    changed = {key.split(".")[0] for name, tensors in before.items() for key, value in tensors.items()
               if not (after[name][key] == value).all()}
    assert changed == {"noise_severe"}


def test_reinit_without_the_detectors_to_restart_is_refused(first_run, tmp_path, caplog):
    root, bids, model = first_run
    assert train_main([str(bids), str(tmp_path / "m"), "--cache-dir", str(root / "cache"), *COMMON,
                       "--init-from", str(model), "--reinit"]) == 2
    assert "--reinit needs" in caplog.text and not (tmp_path / "m").exists()


def test_a_grid_spacing_that_does_not_tile_the_box_is_refused_before_any_work(tmp_path, caplog):
    assert train_main([str(tmp_path / "bids"), str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c"),
                       "--grid-spacing", "3"]) == 2
    assert "--grid-spacing" in caplog.text and "cannot tile" in caplog.text
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("extra, message", [
    (["--calibration-keep-youden", "noise_severe"], "needs objective 'tiers'"),
    (["--calibration-objective", "tiers", "--calibration-keep-youden", "noise"], "unknown detector"),
])
def test_a_bad_keep_youden_is_refused_before_any_work(extra, message, tmp_path, caplog):
    assert train_main([str(tmp_path / "bids"), str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c"),
                       *extra]) == 2
    assert "--calibration-keep-youden" in caplog.text and message in caplog.text
    assert not (tmp_path / "c").exists()


def test_an_unknown_train_only_detector_is_refused_before_any_work(tmp_path, caplog):
    assert train_main([str(tmp_path / "bids"), str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c"),
                       "--init-from", str(tmp_path / "model"), "--train-only", "motion_severe,noise"]) == 2
    assert "--train-only: unknown detector(s) ['noise']" in caplog.text
    assert not (tmp_path / "c").exists()
