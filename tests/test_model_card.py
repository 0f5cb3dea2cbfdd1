"""The model card: the held-out benchmark's invariance tables, and how motion was simulated."""
import json

from bids_qc.config import DEFAULT_MODEL_DIR
from bids_qc.training.model_card import render_model_card

SHIPPED = DEFAULT_MODEL_DIR


def test_bright_tail_table_is_rendered_from_the_benchmark_json():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    heldout = json.loads((SHIPPED / "heldout_benchmark.json").read_text())
    heldout["bright_tail"] = {"factors": [0.5, 1.0, 2.0], "n_scans": 20, "detectors": {
        "contrast_moderate": {"positive": [13, 4, 0], "mean_abs_shift": 0.661}}}
    card = render_model_card(manifest, heldout=heldout)
    assert "240 images, seed 12345, motion timing torchio)" in card  # how the draw was made
    assert "| detector | x0.5 | x1 | x2 | mean abs shift |" in card
    assert "| contrast_moderate | 13/20 | 4/20 | 0/20 | 0.661 |" in card
    del heldout["bright_tail"]
    assert "Bright-tail" not in render_model_card(manifest, heldout=heldout)


def test_clip_level_table_is_rendered_from_the_benchmark_json():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    heldout = json.loads((SHIPPED / "heldout_benchmark.json").read_text())
    heldout.pop("clip_level", None)
    assert "Clip-level invariance" not in render_model_card(manifest, heldout=heldout)
    heldout["clip_level"] = {"factors": [0.95, 1.0, 1.05], "n_scans": 20, "detectors": {
        "contrast_moderate": {"positive": [16, 2, 0], "mean_abs_shift": 0.79}}}
    card = render_model_card(manifest, heldout=heldout)
    assert "clip level at x0.95, x1, x1.05 of their 99.5th percentile" in card
    assert "| detector | x0.95 | x1 | x1.05 | mean abs shift |" in card
    assert "| contrast_moderate | 16/20 | 2/20 | 0/20 | 0.790 |" in card


def test_the_card_says_how_motion_was_timed_and_reads_old_manifests_as_uniform():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    manifest["training"]["motion_timing"] = "torchio"
    assert "timed as TorchIO's RandomMotion" in render_model_card(manifest)
    del manifest["training"]["motion_timing"]
    assert "at sorted uniform random times" in render_model_card(manifest)


def test_the_best_threshold_bound_is_rendered_only_when_the_benchmark_measured_it():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    heldout = json.loads((SHIPPED / "heldout_benchmark.json").read_text())
    for s in heldout["detectors"].values():
        s.pop("best_threshold", None), s.pop("best_threshold_balanced_accuracy", None)
    assert "upper bound" not in render_model_card(manifest, heldout=heldout)
    heldout["detectors"]["contrast_moderate"].update(best_threshold=0.511, best_threshold_balanced_accuracy=0.899)
    assert "contrast_moderate 89.9 (at 0.51)" in render_model_card(manifest, heldout=heldout)


def test_several_draws_are_rendered_by_seed_with_their_mean():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    draws = {"model_id": manifest["model_id"], "seeds": [12345, 1], "n_images": 480,
             "decisions": {"contrast_moderate": {"by_draw": [91.5, 88.0], "mean": 89.75},
                           "tier_1_vs_2": {"by_draw": [97.1, 94.4], "mean": 95.75}}}
    assert "over 2 draws" not in render_model_card(manifest)
    card = render_model_card(manifest, draws=draws)
    assert "## Held-out subjects over 2 draws (`benchmarks/bench_draws.py --seeds 12345 1`, 480 images)" in card
    assert "| decision | seed 12345 | seed 1 | mean | published |" in card
    assert "| contrast_moderate | 91.5 | 88.0 | 89.8 | 90.2 |" in card
    assert "| tier_1_vs_2 | 97.1 | 94.4 | 95.8 | 91.0 |" in card


def test_real_pairs_list_the_slab_detector_beside_the_metrics():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    heldout = json.loads((SHIPPED / "heldout_benchmark.json").read_text())
    heldout["real_motion_pairs"] = {"n_slabs": 12, "n_judged_by_detectors": 0,
                                    "slab_motion_score_pairs": 6, "slab_motion_score_auc": 0.8333,
                                    "tenengrad_pairs": 6, "tenengrad_auc": 0.6944}
    card = render_model_card(manifest, heldout=heldout)
    assert "- slab_motion_score reported by the app: moving scan ranked worse in 6/6 pairs, AUC 0.833." in card
    assert "- tenengrad reported by the app: moving scan ranked worse in 6/6 pairs, AUC 0.694." in card
    assert "snr_native reported" not in card


def test_each_artefact_vs_clean_is_tabled_beside_its_metric():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    heldout = json.loads((SHIPPED / "heldout_benchmark.json").read_text())
    heldout["artefact_vs_clean"] = {
        "contrast": {"metric": "ND-WGM", "moderate vs clean": {
            "detector": "contrast_moderate", "detector_auc": 0.9512, "metric_auc": 0.7021, "n": 60}}}
    card = render_model_card(manifest, heldout=heldout)
    assert "| images | detector | detector AUC | metric | metric AUC | n |" in card
    assert "| contrast moderate vs clean | contrast_moderate | 0.951 | ND-WGM | 0.702 | 60 |" in card
    del heldout["artefact_vs_clean"]
    assert "alone vs clean" not in render_model_card(manifest, heldout=heldout)


def test_the_intensity_observer_is_tabled_beside_the_networks():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    observer = json.loads((SHIPPED / "intensity_observer.json").read_text())
    assert "intensity observer" not in render_model_card(manifest)
    card = render_model_card(manifest, observer=observer)
    seeds = ",".join(map(str, observer["seeds"]))
    assert f"`benchmarks/bench_intensity_observer.py --seeds {seeds}`" in card
    cm = observer["detectors"]["contrast_moderate"]
    assert (f"| contrast_moderate | {cm['network_auc']:.3f} | {cm['observer_auc']:.3f} | {cm['mean_auc']:.3f} |"
            in card)
    assert "observer's held-out AUC when fitted on n training subjects" in card
    top_subject, top_errors = cm["network_errors_by_subject"]["top"][0]
    assert f"Moderate-contrast errors of the network: {cm['network_errors_by_subject']['total']}, most in " \
           f"{top_subject} ({top_errors})" in card
