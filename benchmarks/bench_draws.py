#!/usr/bin/env python
"""Held-out balanced accuracy over several simulation draws, per draw and on average.

    python benchmarks/bench_draws.py [--model-dir DIR (default: the shipped model)] [--seeds 12345 1 2]
    python benchmarks/bench_draws.py --from-json a.json b.json c.json

One draw of ``bench_heldout.py`` is 240 images of 20 subjects: a detector with 50-60 positive
images moves by 1-2 points when one or two images change side, so a single draw cannot separate
two models a few points apart. This runs ``bench_heldout.py`` once per seed (same subjects, other
simulated artefacts; each draw's full output is printed and, with ``--json``, kept as
``<stem>_seed<N>.json``) and then prints the table of balanced accuracy % by draw, their mean and the
published figure. ``--from-json`` summarises draws already run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_heldout  # noqa: E402

from bids_qc.evaluation.draws import print_summary, summarise_draws, summary_record  # noqa: E402


def run_draws(args) -> list[dict] | None:
    """Run bench_heldout.py once per seed; None if a draw fails."""
    extra = (["--model-dir", str(args.model_dir)] if args.model_dir else []) + \
            (["--motion-timing", args.motion_timing] if args.motion_timing else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            draw_json = (args.json.with_name(f"{args.json.stem}_seed{seed}.json") if args.json
                         else Path(tmp) / f"seed{seed}.json")
            if bench_heldout.main([*extra, "--seed", str(seed), "--json", str(draw_json)]):
                return None
            results.append(json.loads(draw_json.read_text()))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=None, help="passed to bench_heldout.py")
    ap.add_argument("--seeds", type=int, nargs="+", default=[12345, 1, 2])
    ap.add_argument("--motion-timing", default=None, help="passed to bench_heldout.py")
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
