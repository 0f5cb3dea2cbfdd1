"""The BIDS-App command line: ``bids_dir output_dir {participant,group} [options]``.

:func:`build_parser` is pure (no I/O, no side effects) so it can be tested and documented;
turning the parsed namespace into a :class:`bids_qc.config.Config` happens in
:mod:`bids_qc.cli.run`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bids_qc import __version__

ANALYSIS_LEVELS = ("participant", "group")
PLUGINS = ("MultiProc", "Linear", "SLURM", "SLURMGraph", "SGE", "PBS", "LSF")


def _strip_prefix(prefix: str):
    """Argument type that accepts ``01`` and ``sub-01`` alike and returns ``01``."""

    def _convert(value: str) -> str:
        label = value[len(prefix):] if value.startswith(prefix) else value
        if not label or not label.isalnum():
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a valid label (letters and digits only, "
                f"with or without the {prefix!r} prefix)"
            )
        return label

    _convert.__name__ = f"{prefix.rstrip('-')} label"
    return _convert


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 1")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def _json_object(value: str) -> dict:
    """``--plugin-args``: a JSON object given inline (``'{"sbatch_args": "-p short"}'``)."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"n_procs\": 2}'")
    return parsed


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (pure: reads nothing, writes nothing)."""
    parser = argparse.ArgumentParser(
        prog="bids-qc",  # the console script (run.py and the containers run the same)
        description=(
            "bids_qc: quality control of brain T1-weighted MRI in a BIDS dataset. Six 3D CNN "
            "detectors grade motion, noise and contrast artefacts (0 none, 1 moderate, 2 severe) "
            "and give each scan a tier (1 good, 2 medium, 3 reject), next to image-quality "
            "metrics (SNR, ND-WGM, AES, Tenengrad)."
        ),
        epilog=(
            "examples:\n"
            "  %(prog)s /data/ds /out participant --participant-label 01 02 --nprocs 2\n"
            "  %(prog)s /data/ds /out group\n"
            "  %(prog)s /data/ds /out group --annotations ratings.tsv\n\n"
            "exit codes: 0 ok, 16 BIDS validation failed, 17 unknown analysis level, "
            "18 no scan matched the filters, 64 usage error, 65 some scans failed (the others "
            "were written) or bad annotation file, 66 bids_dir missing, 73 cannot create "
            "output_dir, 74 I/O error writing outputs, 78 unusable model folder."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset (read only)")
    parser.add_argument(
        "output_dir",
        type=Path,
        help="where the derivatives go; must not be inside bids_dir except under "
        "bids_dir/derivatives/",
    )
    parser.add_argument(
        "analysis_level",
        choices=ANALYSIS_LEVELS,
        help="'participant': assess every selected T1w scan; 'group': gather the per-scan "
        "results into group_T1w.tsv, group_summary.json and a group report",
    )
    parser.add_argument("--version", action="version", version=f"bids_qc {__version__}")
    parser.add_argument(
        "-v", "--verbose", dest="verbosity", action="count", default=0,
        help="more log output (-v: progress details and nipype info, -vv: debug)",
    )

    sel = parser.add_argument_group("selecting scans")
    sel.add_argument(
        "--participant-label", "--participant_label", nargs="+", default=[],
        type=_strip_prefix("sub-"), metavar="LABEL",
        help="subjects to process, with or without 'sub-' (default: all)",
    )
    sel.add_argument(
        "--session-id", "--session_id", nargs="+", default=[], type=_strip_prefix("ses-"),
        metavar="LABEL", help="sessions to process, with or without 'ses-' (default: all)",
    )
    sel.add_argument(
        "--bids-filter-file", "--bids_filter_file", type=Path, default=None, metavar="FILE",
        help='JSON file with pybids entity filters for the T1w query, fMRIPrep style: '
        '{"t1w": {"acquisition": "MPRAGE", "reconstruction": null}} (null: entity absent)',
    )
    sel.add_argument(
        "--skip-bids-validation", "--skip_bids_validation", action="store_true",
        help="index bids_dir without BIDS validation (accepts non-compliant file names and a "
        "missing dataset_description.json)",
    )

    perf = parser.add_argument_group("execution and performance")
    perf.add_argument(
        "-w", "--work-dir", "--work_dir", type=Path, default=None, metavar="DIR",
        help="nipype working directory, kept after the run (default: a temporary folder "
        "that is deleted at the end)",
    )
    perf.add_argument(
        "--nprocs", "--n_procs", "--n_cpus", type=_positive_int, default=1, metavar="N",
        help="scans processed in parallel (MultiProc workers; default 1)",
    )
    perf.add_argument(
        "--omp-nthreads", "--omp_nthreads", type=_positive_int, default=1, metavar="N",
        help="threads per scan (torch and numerical libraries; default 1)",
    )
    perf.add_argument(
        "--mem-gb", "--mem_gb", type=_positive_float, default=None, metavar="GB",
        help="memory the scheduler may use at once (default: 90%% of the machine)",
    )
    perf.add_argument(
        "--plugin", choices=PLUGINS, default="MultiProc",
        help="nipype execution plugin (default MultiProc; Linear runs in this process; "
        "SLURM submits one job per scan, see --plugin-args)",
    )
    perf.add_argument(
        "--plugin-args", "--plugin_args", type=_json_object, default={}, metavar="JSON",
        help="extra nipype plugin arguments as a JSON object, e.g. "
        "'{\"sbatch_args\": \"--time=00:10:00 -p short\"}'",
    )
    perf.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="torch device for the detectors (default cpu)",
    )
    perf.add_argument(
        "--force", action="store_true",
        help="redo scans whose _qc.json already exists (default: resume, i.e. skip scans "
        "already assessed with status ok)",
    )

    model = parser.add_argument_group("model and outputs")
    model.add_argument(
        "--model-dir", "--model_dir", type=Path, default=None, metavar="DIR",
        help="folder with the six detectors (weights.safetensors + manifest.json; default: "
        "the model shipped with bids_qc)",
    )
    model.add_argument(
        "--slab-model-dir", "--slab_model_dir", default=None, metavar="DIR",
        help="folder of the slab motion detector, which scores motion on sagittal slices and so "
        "also judges partial-coverage slabs (default: the one shipped with bids_qc; 'none' "
        "turns it off)",
    )
    model.add_argument(
        "--no-reports", "--no_reports", dest="reports", action="store_false",
        help="do not write HTML reports (JSON and TSV outputs only)",
    )

    group = parser.add_argument_group("group level")
    group.add_argument(
        "--annotations", type=Path, default=None, metavar="FILE",
        help="TSV of expert ratings; fine-tunes the detectors on this dataset at group level "
        "(see README, 'Rating and annotations format')",
    )
    return parser
