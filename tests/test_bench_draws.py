"""bids_qc.evaluation.draws (benchmarks/bench_draws.py): the per-draw and mean table of several
held-out benchmark draws."""
import json

import pytest

from bids_qc.evaluation.draws import print_summary, summarise_draws, summary_record


def _draw(seed, model="m-1", **bacc):
    dets = {k: {"balanced_accuracy": v} for k, v in bacc.items() if not k.startswith("tier")}
    tiers = {k: {"balanced_accuracy": v} for k, v in bacc.items() if k.startswith("tier")}
    return {"model_id": model, "seed": seed, "motion_timing": "torchio", "n_images": 240,
            "detectors": dets, "tiers": tiers}


def test_mean_and_by_draw_in_percent():
    s = summarise_draws([_draw(1, noise_severe=0.97, tier_1_vs_2=0.90),
                                     _draw(2, noise_severe=0.95, tier_1_vs_2=0.96)])
    assert s["noise_severe"]["by_draw"] == pytest.approx([97.0, 95.0])
    assert s["noise_severe"]["mean"] == pytest.approx(96.0)
    assert s["tier_1_vs_2"]["mean"] == pytest.approx(93.0)


def test_decision_missing_from_a_draw_is_left_out():
    s = summarise_draws([_draw(1, noise_severe=0.97, motion_severe=1.0),
                                     _draw(2, noise_severe=0.95)])
    assert list(s) == ["noise_severe"]


def test_draws_of_different_models_are_refused():
    with pytest.raises(ValueError, match="m-1.*m-2"):
        summarise_draws([_draw(1, noise_severe=0.9), _draw(2, model="m-2", noise_severe=0.9)])


def test_the_table_is_printed_and_the_summary_recorded(tmp_path, capsys):
    files = []
    for seed, v in ((7, 0.80), (8, 0.90)):
        files.append(tmp_path / f"d{seed}.json")
        files[-1].write_text(json.dumps(_draw(seed, contrast_moderate=v)))
    results = [json.loads(p.read_text()) for p in files]  # as bench_draws.py --from-json reads them
    summary = summarise_draws(results)
    print_summary(results, summary)
    printed = capsys.readouterr().out
    assert "seed 7" in printed and "seed 8" in printed and "85.0" in printed
    record = json.loads(json.dumps(summary_record(results, summary)))
    assert record["seeds"] == [7, 8] and record["n_images"] == 480
    assert record["decisions"]["contrast_moderate"]["mean"] == pytest.approx(85.0)


def test_a_model_without_held_out_subjects_is_refused():
    """bench_heldout.py and bench_draws.py share the draw (bids_qc.evaluation.heldout_draw); a
    manifest without held-out subjects stops it before any work."""
    from types import SimpleNamespace

    from bids_qc.evaluation.heldout_draw import NoHeldOutSubjects, heldout_draw

    bundle = SimpleNamespace(manifest={"detectors": {}, "training": {"test_subjects": []}})
    with pytest.raises(NoHeldOutSubjects, match="no held-out subjects"):
        heldout_draw(bundle, "data")
