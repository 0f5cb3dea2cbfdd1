"""Balanced accuracy of several held-out benchmark draws (``bench_heldout.py --json`` dicts), by
draw and on average (``benchmarks/bench_draws.py``)."""
from __future__ import annotations

import numpy as np

from bids_qc.training.model_card import PUBLISHED


def summarise_draws(results: list[dict]) -> dict:
    """{decision: {"by_draw": [b.acc %, ...], "mean": float}} for every detector and tier decision
    present in all ``results`` (bench_heldout JSON dicts); refuses draws of different models."""
    models = {r.get("model_id") for r in results}
    if len(models) != 1:
        raise ValueError(f"the draws come from different models: {sorted(map(str, models))}")
    names = [n for n in (*results[0]["detectors"], *results[0]["tiers"])
             if all(n in r["detectors"] or n in r["tiers"] for r in results)]
    summary = {}
    for name in names:
        by_draw = [100 * (r["detectors"].get(name) or r["tiers"][name])["balanced_accuracy"] for r in results]
        summary[name] = {"by_draw": by_draw, "mean": float(np.mean(by_draw))}
    return summary


def print_summary(results: list[dict], summary: dict) -> None:
    seeds = [str(r.get("seed", "?")) for r in results]
    timings = sorted({str(r.get("motion_timing", "?")) for r in results})
    print(f"\n{results[0].get('model_id')}: balanced accuracy % over {len(results)} draws "
          f"(seeds {', '.join(seeds)}; motion timing {', '.join(timings)}; "
          f"{sum(r.get('n_images', 0) for r in results)} images)\n")
    print(f"{'decision':<20}" + "".join(f"{'seed ' + s:>12}" for s in seeds) + f"{'mean':>8}{'published':>11}")
    for name, s in summary.items():
        print(f"{name:<20}" + "".join(f"{v:>12.1f}" for v in s["by_draw"]) + f"{s['mean']:>8.1f}"
              f"{PUBLISHED.get(name, float('nan')):>11.1f}")


def summary_record(results: list[dict], summary: dict) -> dict:
    """The JSON written by ``bench_draws.py --json``: the draws' model, seeds, timings, images and
    the ``summarise_draws`` table."""
    return {"model_id": results[0].get("model_id"),
            "seeds": [r.get("seed") for r in results],
            "motion_timing": sorted({r.get("motion_timing") for r in results}),
            "n_images": sum(r.get("n_images", 0) for r in results),
            "decisions": summary}
