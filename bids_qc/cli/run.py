"""``main(argv) -> exit code``: parse, build the Config, run a level, report.

Exit codes (BIDS-App execution spec + sysexits.h):

==  ==========================================================================
0   success (also when every selected scan was already done: resume)
16  BIDS validation failed (pybids; skip with ``--skip-bids-validation``)
17  unknown analysis level (argparse alone would exit 2)
18  no T1w scan matched the filters / no participant results for the group level
64  usage error (bad option value, bad filter file, output_dir inside bids_dir, ...)
65  data error: some scans failed (their JSON says why; the others were written),
    or the annotations file is malformed
66  bids_dir (or the annotations file) does not exist
70  internal error (a bug: please report it)
73  output_dir cannot be created or written
74  I/O error while writing outputs (disk full, read-only file system, ...)
78  the model folder is unusable (missing, corrupted, wrong geometry)
130 interrupted (Ctrl-C, or SIGTERM e.g. from a batch system's time limit); finished
    scans are complete, resume with the same command
==  ==========================================================================

Every output is written atomically (temporary file + rename), so an interruption never
leaves a half-written ``_qc.json``; SIGTERM is handled like Ctrl-C (temporary files removed).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from bids_qc import __version__
from bids_qc.cli.parser import build_parser

LOGGER = logging.getLogger("bids_qc.cli")

EX_OK, EX_VALIDATION, EX_LEVEL, EX_NOMATCH = 0, 16, 17, 18
EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_SOFTWARE = 64, 65, 66, 70
EX_CANTCREAT, EX_IOERR, EX_CONFIG, EX_INTERRUPTED = 73, 74, 78, 130
#: errno values meaning "the storage failed" (exit 74) rather than "cannot write here" (73).
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``finally`` blocks remove temporary files."""


def _raise_terminated(signum, frame):
    raise Terminated()


class _Exit(Exception):
    """Stop with ``code`` after logging ``message`` (internal control flow of main)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _parse(argv) -> argparse.Namespace:
    parser = build_parser()
    parser.exit_on_error = False  # argparse errors come back as ArgumentError (py >= 3.9)
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        # already printed: an empty message is not logged again
        raise _Exit(EX_LEVEL if exc.argument_name == "analysis_level" else EX_USAGE,
                    "") from None
    except SystemExit as exc:  # -h / --version (0) or errors argparse still reports itself
        raise _Exit(EX_OK if exc.code in (0, None) else EX_USAGE, "") from None


def setup_logging(verbosity: int) -> None:
    """bids_qc logs INFO (DEBUG with -vv); nipype only warnings unless -v."""
    handler_name = "bids_qc-cli"
    logger = logging.getLogger("bids_qc")
    if not any(getattr(h, "name", None) == handler_name for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.name = handler_name
        handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(message)s",
                                               "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    nipype_level = ("WARNING", "INFO", "DEBUG")[min(verbosity, 2)]
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    if "LOGNAME" not in os.environ:  # nipype's SLURM plugin reads it; unset in containers/cron/CI
        import getpass

        try:
            os.environ["LOGNAME"] = getpass.getuser()
        except (KeyError, OSError):
            os.environ["LOGNAME"] = "bids_qc"
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    nipype_config.update_config({
        "logging": {"workflow_level": nipype_level, "interface_level": nipype_level,
                    "utils_level": nipype_level},
        "execution": {"check_version": "false"},
    })
    nipype_logging.update_logging(nipype_config)


def _limit_threads(omp_nthreads: int) -> None:
    """Numerical libraries get ``omp_nthreads`` threads; this (scheduling) process one."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(omp_nthreads)


def _slab_model_dir(value, default):
    """``--slab-model-dir``: a folder, ``none`` (off), or unset (the shipped folder)."""
    if value is None:
        return default
    if str(value).lower() == "none":
        return None
    return Path(value).expanduser().resolve()


def build_config(args: argparse.Namespace):
    """Check the paths and build the frozen :class:`~bids_qc.config.Config`."""
    from bids_qc.bids_io import load_bids_filters
    from bids_qc.config import DEFAULT_MODEL_DIR, DEFAULT_SLAB_MODEL_DIR, Config
    from bids_qc.exceptions import BidsInputError
    from bids_qc.outputs import check_output_dir

    bids_dir = args.bids_dir.expanduser().resolve()
    if not bids_dir.is_dir():
        raise _Exit(EX_NOINPUT, f"bids_dir {args.bids_dir} does not exist or is not a folder")
    output_dir = args.output_dir.expanduser().resolve()
    work_dir = args.work_dir.expanduser().resolve() if args.work_dir else None
    try:
        check_output_dir(bids_dir, output_dir)
        if work_dir is not None and work_dir.is_relative_to(bids_dir):
            raise ValueError(f"--work-dir {work_dir} is inside the input dataset {bids_dir}")
        filters = load_bids_filters(args.bids_filter_file)
    except (ValueError, BidsInputError) as exc:
        raise _Exit(EX_USAGE, str(exc)) from None
    annotations = args.annotations.expanduser().resolve() if args.annotations else None
    if annotations is not None:
        if args.analysis_level != "group":
            raise _Exit(EX_USAGE, "--annotations is a group-level option")
        if not annotations.is_file():
            raise _Exit(EX_NOINPUT, f"annotations file {args.annotations} does not exist")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise _Exit(EX_USAGE, "--device cuda: no CUDA device in this torch build; use cpu")
        LOGGER.warning("--device cuda: the detectors run on the CPU in this version")
    return Config(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=args.analysis_level,
        participant_label=tuple(args.participant_label),
        session_id=tuple(args.session_id),
        bids_filters=filters,
        work_dir=work_dir,
        nprocs=args.nprocs,
        omp_nthreads=args.omp_nthreads,
        mem_gb=args.mem_gb,
        model_dir=(args.model_dir.expanduser().resolve() if args.model_dir
                   else DEFAULT_MODEL_DIR),
        slab_model_dir=_slab_model_dir(args.slab_model_dir, DEFAULT_SLAB_MODEL_DIR),
        skip_bids_validation=args.skip_bids_validation,
        plugin=args.plugin,
        plugin_args=dict(args.plugin_args),
        reports=args.reports,
        force=args.force,
        annotations=annotations,
        device=args.device,
        verbosity=args.verbosity,
    )


def _make_output_dir(config) -> None:
    from bids_qc.outputs import write_dataset_description

    try:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        if config.analysis_level == "participant":
            write_dataset_description(config.output_dir, config.bids_dir)
        elif not os.access(config.output_dir, os.W_OK):
            raise PermissionError(f"{config.output_dir} is not writable")
    except OSError as exc:
        code = EX_IOERR if exc.errno in STORAGE_ERRNOS else EX_CANTCREAT
        raise _Exit(code, f"cannot create or write output_dir {config.output_dir}: "
                          f"{exc}") from None


def run_participant(config) -> int:
    """Find the scans, skip those already done, run the workflow, log a summary."""
    from bids_qc.exceptions import ModelError
    from bids_qc.outputs import is_done, scan_output_paths

    _limit_threads(config.omp_nthreads)
    without_subject: list[str] = []
    scans = _select_scans(config, without_subject)
    _make_output_dir(config)

    json_of = {s.source_file: scan_output_paths(config.output_dir, s.subdir, s.bids_name)["json"]
               for s in scans}
    done = [] if config.force else [s for s in scans if is_done(json_of[s.source_file])]
    todo = [s for s in scans if s not in done]
    LOGGER.info("bids_qc %s: %d scan(s) to process%s, output in %s", __version__, len(todo),
                f" ({len(done)} already done, skipped; --force redoes them)" if done else "",
                config.output_dir)
    progress = None
    if todo:
        import torch

        from bids_qc.interfaces.assess import get_bundle, get_slab_detector

        torch.set_num_threads(1)  # this process only loads the model; each scan sets its own
        try:
            bundle = get_bundle(config.model_dir)  # once, before the workers fork
            if config.slab_model_dir is not None:
                get_slab_detector(config.slab_model_dir)
        except ModelError as exc:
            raise _Exit(EX_CONFIG, str(exc)) from None
        if not bundle.trained:
            LOGGER.warning("model %s is NOT trained: grades and tiers are meaningless",
                           bundle.model_id)
        marker = _start_marker(config, todo, json_of)
        try:
            progress = _run_workflow(config, todo)
        finally:
            if marker is not None:
                with contextlib.suppress(OSError):
                    marker.unlink()
    return _summarise_run(config, scans, done, progress, json_of, without_subject)


def _start_marker(config, todo, json_of):
    """The run marker that lets a concurrent group run name the scans not written yet (None if
    it cannot be written: the scans' own writes will then report the problem)."""
    from bids_qc.outputs import start_run_marker

    try:
        return start_run_marker(config.output_dir,
                                [(s.source_file, json_of[s.source_file]) for s in todo])
    except OSError as exc:
        LOGGER.warning("cannot write the run marker in %s: %s", config.output_dir, exc)
        return None


def _select_scans(config, without_subject: list | None = None):
    """The scans to assess: pybids' selection, plus T1w-looking files whose names pybids
    rejected (they get an error record saying so rather than silently missing). No two scans
    share outputs (:func:`~bids_qc.bids_io.refuse_shared_outputs`). T1w files without a
    subject are logged and appended to ``without_subject``. Each assessed scan carries its
    scanner and site (:func:`~bids_qc.bids_meta.add_bids_meta`)."""
    from bids_qc.bids_io import (
        BidsValidationFailure,
        NoScansFound,
        build_layout,
        find_t1w,
        invalid_name_scans,
        refuse_shared_outputs,
    )
    from bids_qc.bids_meta import add_bids_meta
    from bids_qc.exceptions import BidsInputError

    try:
        layout = build_layout(config.bids_dir, validate=not config.skip_bids_validation)
    except BidsValidationFailure as exc:
        raise _Exit(EX_VALIDATION, str(exc)) from None
    except OSError as exc:
        raise _Exit(EX_NOINPUT, f"cannot read bids_dir {config.bids_dir}: {exc}") from None
    invalid = invalid_name_scans(layout, participant_label=config.participant_label,
                                 session_id=config.session_id)
    if invalid and config.bids_filters:
        LOGGER.warning("%d T1w-like file(s) with invalid BIDS names ignored (a "
                       "--bids-filter-file cannot select them), e.g. %s", len(invalid),
                       invalid[0].source_file)
        invalid = []
    try:
        scans = find_t1w(layout, participant_label=config.participant_label,
                         session_id=config.session_id, filters=config.bids_filters,
                         without_subject=without_subject)
    except NoScansFound as exc:
        if not invalid:
            extra = (f"; {len(without_subject)} T1w file(s) without a subject were not "
                     f"assessed, e.g. {without_subject[0]}" if without_subject else "")
            raise _Exit(EX_NOMATCH, f"{exc}{extra}") from None
        scans = []
    except BidsInputError as exc:
        raise _Exit(EX_USAGE, str(exc)) from None
    for scan in invalid:
        LOGGER.warning("%s: not a valid BIDS file name; it gets an error record (use "
                       "--skip-bids-validation to assess it anyway)", scan.source_file)
    scans = add_bids_meta(layout, scans)  # scanner and site, read here once for the records
    return refuse_shared_outputs(sorted(scans + invalid, key=lambda s: s.source_file))


class Progress:
    """nipype ``status_callback``: one log line per finished scan, in the main process.

    ``[3/12] sub-01_T1w: tier 1 (motion 0, noise 0, contrast 0) in 2.1 s`` or
    ``[4/12] sub-02_T1w: ERROR: <reason>``. Collects I/O errors and crashed nodes.
    """

    def __init__(self, scans):
        from bids_qc.workflows.participant import node_name

        self.total = len(scans)
        self.count = 0
        self.io_errors: list[str] = []
        self.crashed: list[str] = []
        self._scans = {node_name(s, i): s for i, s in enumerate(scans)}

    def __call__(self, node, status: str) -> None:
        if status not in ("end", "exception"):
            return
        try:  # a callback must never break nipype's scheduler
            self._report(node, status)
        except Exception as exc:  # pragma: no cover - defensive
            LOGGER.debug("progress callback failed: %s", exc)

    def _report(self, node, status: str) -> None:
        self.count += 1
        scan = self._scans.get(node.name)
        prefix = f"[{self.count}/{self.total}] {scan.bids_name if scan else node.name}"
        if status == "exception":
            self.crashed.append(scan.bids_name if scan else node.name)
            LOGGER.error("%s: CRASHED (a bug; see the nipype crash file)", prefix)
            return
        out = node.result.outputs
        seconds = out.seconds if isinstance(out.seconds, float) else float("nan")
        if out.io_error:
            self.io_errors.append(f"{prefix}: {out.io_error}")
            LOGGER.error("%s: cannot write outputs: %s", prefix, out.io_error)
        elif out.status != "ok":
            LOGGER.warning("%s: ERROR: %s (%.1f s)", prefix, out.error, seconds)
        elif getattr(out, "cannot_judge", ""):
            LOGGER.warning("%s: CANNOT JUDGE: %s (%.1f s)", prefix, out.cannot_judge, seconds)
        elif out.tier is None:
            LOGGER.info("%s: no tier (partial coverage or not registered; see the JSON)%s in %.1f s",
                        prefix, _slab_text(out.slab_motion), seconds)
        else:
            grades = ", ".join(f"{a} {g}" for a, g in out.grades.items())
            LOGGER.info("%s: tier %s (%s)%s in %.1f s", prefix, out.tier, grades,
                        _slab_text(out.slab_motion), seconds)


def _slab_text(slab) -> str:
    score = (slab or {}).get("score")
    if score is None:
        return ""
    return f"; slab motion {score:.3g}" + (" (motion)" if (slab or {}).get("motion") else "")


def _run_workflow(config, todo):
    from bids_qc.workflows.participant import init_participant_wf

    own_work_dir = config.work_dir is None
    try:
        work_dir = (Path(tempfile.mkdtemp(prefix="bids_qc_work_")) if own_work_dir
                    else config.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        code = EX_IOERR if exc.errno in STORAGE_ERRNOS else EX_CANTCREAT
        where = config.work_dir or f"a temporary folder in {tempfile.gettempdir()}"
        raise _Exit(code, f"cannot create the work folder {where} (set -w/--work-dir or "
                          f"TMPDIR): {exc}") from None
    from dataclasses import replace

    config = replace(config, work_dir=work_dir)
    progress = Progress(todo)
    workflow = init_participant_wf(config, todo)
    plugin_args = {"status_callback": progress}
    if config.plugin == "MultiProc":
        plugin_args.update(n_procs=config.nprocs, raise_insufficient=False)
        if config.mem_gb:
            plugin_args["memory_gb"] = config.mem_gb
    plugin_args.update(config.plugin_args)
    try:
        workflow.run(plugin=config.plugin, plugin_args=plugin_args)
    except RuntimeError as exc:  # nipype: some nodes crashed; progress knows which
        LOGGER.debug("nipype reported: %s", exc)
    except KeyboardInterrupt:
        _stop_workers()
        raise
    finally:
        if progress.crashed:
            LOGGER.error("nipype crash files kept in %s", work_dir / "crash")
        elif own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    return progress


def _stop_workers() -> None:
    """After Ctrl-C/SIGTERM: end this run's worker processes (MultiProc) at once, quietly.

    A scan being assessed in a worker is abandoned (its JSON is not written, so the next
    run redoes it); the pool's and nipype's complaints about vanished workers are muted.
    """
    import multiprocessing

    for name in ("concurrent.futures", "nipype.workflow"):
        logging.getLogger(name).disabled = True
    for child in multiprocessing.active_children():
        child.kill()
        child.join(timeout=10)


def _summarise_run(config, scans, done, progress, json_of, without_subject=()) -> int:
    from bids_qc.outputs import read_record

    tiers = {1: 0, 2: 0, 3: 0}
    slab = {True: 0, False: 0, None: 0}  # slab-motion verdicts of the ok scans without a tier
    n_ok = n_failed = n_unjudged = 0
    io_errors = progress.io_errors if progress else []
    for scan in scans:
        record = read_record(json_of[scan.source_file])
        if record is None:
            n_failed += 1
            continue
        if record.get("status") == "ok":
            n_ok += 1
            if record.get("tier") in tiers:
                tiers[record["tier"]] += 1
            else:
                motion = (record.get("slab_motion") or {}).get("motion")
                slab[None if motion is None else bool(motion)] += 1
            n_unjudged += bool(record.get("cannot_judge"))
        else:
            n_failed += 1
    crashed = progress.crashed if progress else []
    LOGGER.info(
        "finished: %d scan(s): %d ok, %d failed%s; tiers: 1 good %d, 2 medium %d, 3 reject %d; "
        "no tier %d (slab motion %d, no slab motion %d, no verdict %d)%s",
        len(scans), n_ok, n_failed, f" ({len(done)} were already done)" if done else "",
        tiers[1], tiers[2], tiers[3], sum(slab.values()), slab[True], slab[False], slab[None],
        f"; {n_unjudged} ok but cannot be judged (see cannot_judge in their JSON)"
        if n_unjudged else "",
    )
    if io_errors:
        LOGGER.error("could not write the outputs of %d scan(s), first: %s", len(io_errors),
                     io_errors[0])
        return EX_IOERR
    if crashed:
        LOGGER.error("%d node(s) crashed without a record (a bug): %s", len(crashed),
                     ", ".join(crashed[:5]))
        return EX_SOFTWARE
    if without_subject:
        LOGGER.error("%d T1w file(s) without a subject were not assessed (no outputs): %s",
                     len(without_subject), ", ".join(without_subject[:5]))
    return EX_DATAERR if n_failed or without_subject else EX_OK


def run_group(config) -> int:
    from bids_qc.exceptions import AnnotationError
    from bids_qc.workflows.group import NoRecordsFound, run_group_level

    if not config.output_dir.is_dir():
        raise _Exit(EX_NOMATCH, f"{config.output_dir} does not exist: run the participant "
                                "level first")
    _make_output_dir(config)
    try:
        summary = run_group_level(config)
    except NoRecordsFound as exc:
        raise _Exit(EX_NOMATCH, str(exc)) from None
    except AnnotationError as exc:
        raise _Exit(EX_DATAERR, f"annotations: {exc}") from None
    except OSError as exc:
        raise _Exit(EX_IOERR, f"cannot write group outputs: {exc}") from None
    from bids_qc.verdict_counts import summary_line

    LOGGER.info("%s", summary_line(summary))
    return EX_OK


def main(argv=None) -> int:
    """Run the BIDS-App with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return _main(argv)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv) -> int:
    try:
        args = _parse(argv)
        setup_logging(args.verbosity)
        config = build_config(args)
        if config.analysis_level == "participant":
            return run_participant(config)
        return run_group(config)
    except _Exit as exc:
        if str(exc):
            LOGGER.error("%s", exc)
        return exc.code
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        LOGGER.error("%s; finished scans are complete, rerun the same command to resume", what)
        return EX_INTERRUPTED
    except Exception:  # a bug: say so with the traceback rather than die silently
        LOGGER.exception("internal error in bids_qc %s; please report it", __version__)
        return EX_SOFTWARE


