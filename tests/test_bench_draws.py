"""benchmarks/bench_draws.py: the per-draw and mean table of several held-out benchmark draws."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_draws", ROOT / "benchmarks" / "bench_draws.py")
bench_draws = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_draws)


def _draw(seed, model="m-1", **bacc):
    dets = {k: {"balanced_accuracy": v} for k, v in bacc.items() if not k.startswith("tier")}
    tiers = {k: {"balanced_accuracy": v} for k, v in bacc.items() if k.startswith("tier")}
    return {"model_id": model, "seed": seed, "motion_timing": "torchio", "n_images": 240,
            "detectors": dets, "tiers": tiers}


def test_mean_and_by_draw_in_percent():
    s = bench_draws.summarise_draws([_draw(1, noise_severe=0.97, tier_1_vs_2=0.90),
                                     _draw(2, noise_severe=0.95, tier_1_vs_2=0.96)])
    assert s["noise_severe"]["by_draw"] == pytest.approx([97.0, 95.0])
    assert s["noise_severe"]["mean"] == pytest.approx(96.0)
    assert s["tier_1_vs_2"]["mean"] == pytest.approx(93.0)


def test_decision_missing_from_a_draw_is_left_out():
    s = bench_draws.summarise_draws([_draw(1, noise_severe=0.97, motion_severe=1.0),
                                     _draw(2, noise_severe=0.95)])
    assert list(s) == ["noise_severe"]


def test_draws_of_different_models_are_refused():
    with pytest.raises(ValueError, match="m-1.*m-2"):
        bench_draws.summarise_draws([_draw(1, noise_severe=0.9), _draw(2, model="m-2", noise_severe=0.9)])


def test_from_json_prints_the_table_and_writes_the_summary(tmp_path, capsys):
    files = []
    for seed, v in ((7, 0.80), (8, 0.90)):
        files.append(tmp_path / f"d{seed}.json")
        files[-1].write_text(json.dumps(_draw(seed, contrast_moderate=v)))
    out = tmp_path / "summary.json"
    assert bench_draws.main(["--from-json", *map(str, files), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed 7" in printed and "seed 8" in printed and "85.0" in printed
    summary = json.loads(out.read_text())
    assert summary["seeds"] == [7, 8]
    assert summary["decisions"]["contrast_moderate"]["mean"] == pytest.approx(85.0)
