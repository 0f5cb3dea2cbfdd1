#!/usr/bin/env python
"""Held-out balanced accuracy over several simulation draws, per draw and on average.

    python benchmarks/bench_draws.py [--model-dir DIR (default: the shipped model)] [--seeds 12345 1 2]
    python benchmarks/bench_draws.py --from-json a.json b.json c.json

One draw of ``bench_heldout.py`` is 240 images of 20 subjects: a detector with 50-60 positive
images moves by 1-2 points when one or two images change side, so a single draw cannot separate
two models a few points apart. This runs ``bench_heldout.py``'s draw
(``bids_qc.evaluation.heldout_draw``, one model load for all) once per seed (same subjects, other
simulated artefacts; each draw's full output is printed and, with ``--json``, kept as
``<stem>_seed<N>.json``) and then prints the table of balanced accuracy % by draw, their mean and
the published figure. ``--from-json`` summarises draws already run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from bids_qc.config import DEFAULT_MODEL_DIR
from bids_qc.evaluation.draws import print_summary, summarise_draws, summary_record
from bids_qc.evaluation.heldout_draw import (
    DEFAULT_SAMPLES_PER_SUBJECT,
    NoHeldOutSubjects,
    draw_json,
    heldout_draw,
)
from bids_qc.models import load_bundle
from bids_qc.simulation import MOTION_TIMINGS

ROOT = Path(__file__).resolve().parent.parent


def run_draws(args) -> list[dict] | None:
    """One held-out draw (``bench_heldout.py``'s) per seed, as its JSON reads back; None if a draw
    fails."""
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model_dir)
    results = []
    for seed in args.seeds:
        try:
            out = heldout_draw(bundle, args.data, samples_per_subject=args.samples_per_subject, seed=seed,
                               motion_timing=args.motion_timing)
        except NoHeldOutSubjects as err:
            print(err, file=sys.stderr)
            return None
        text = draw_json(out)
        if args.json:
            args.json.with_name(f"{args.json.stem}_seed{seed}.json").write_text(text)
        print(f"\ntotal {out['seconds']} s")
        results.append(json.loads(text))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("BIDS_QC_DATA", ROOT / "../shared/data")))
    ap.add_argument("--seeds", type=int, nargs="+", default=[12345, 1, 2])
    ap.add_argument("--samples-per-subject", type=int, default=DEFAULT_SAMPLES_PER_SUBJECT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--motion-timing", choices=MOTION_TIMINGS, default="torchio",
                    help="when the simulated movements happen in k-space (bids_qc.simulation)")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here (and each draw beside it)")
    ap.add_argument("--from-json", type=Path, nargs="+", default=None, metavar="JSON",
                    help="summarise these bench_heldout.py --json files instead of running draws")
    args = ap.parse_args(argv)
    if args.from_json:
        results = [json.loads(p.read_text()) for p in args.from_json]
    else:
        results = run_draws(args)
        if results is None:
            return 1
    try:
        summary = summarise_draws(results)
    except ValueError as err:
        print(f"bench_draws: {err}", file=sys.stderr)
        return 1
    print_summary(results, summary)
    if args.json:
        args.json.write_text(json.dumps(summary_record(results, summary), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
