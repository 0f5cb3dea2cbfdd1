"""Participant level: one nipype node per T1w scan (assess, then write its outputs)."""
from __future__ import annotations

import os
import re

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no version check over the network

#: Memory (GB) one scan node is expected to need; MultiProc schedules with it.
NODE_MEM_GB = 1.0


def node_name(scan, index: int) -> str:
    """A valid, unique nipype node name for ``scan`` (``qc_<index>_<bids name>``)."""
    return f"qc_{index:05d}_" + re.sub(r"\W", "_", scan.bids_name)


def execution_config(config) -> dict:
    """nipype ``execution`` settings for the run (fast polling, crashes in the work dir)."""
    settings = {
        "poll_sleep_duration": 0.01,
        "stop_on_first_crash": False,
        "remove_unnecessary_outputs": True,
        "hash_method": "timestamp",
        "check_version": False,
        "crashfile_format": "txt",
        "parameterize_dirs": False,
        "create_report": False,
    }
    if config.work_dir is not None:
        settings["crashdump_dir"] = str(config.work_dir / "crash")
    return settings


def init_participant_wf(config, scans, name: str = "bids_qc_participant_wf"):
    """A workflow with one :class:`~bids_qc.interfaces.assess.AssessScan` node per scan.

    ``config``: :class:`bids_qc.config.Config` (``output_dir``, ``model_dir``,
    ``omp_nthreads``, ``reports``, ``work_dir`` are used); ``scans``: list of
    :class:`bids_qc.bids_io.ScanSpec`. Nodes are independent (no joins), so a failing scan
    never stops the others. Nodes always rerun (``overwrite``): which scans need work is
    decided before, from the existing ``_qc.json`` files.
    """
    from nipype.pipeline import engine as pe

    from bids_qc.bids_io import display_name
    from bids_qc.interfaces.assess import AssessScan

    workflow = pe.Workflow(name=name)
    if config.work_dir is not None:
        workflow.base_dir = str(config.work_dir)
    workflow.config["execution"].update(execution_config(config))
    nodes = []
    for index, scan in enumerate(scans):
        node = pe.Node(
            AssessScan(
                in_file=display_name(str(scan.path)) if scan.problem else str(scan.path),
                source_file=scan.source_file,
                bids_name=scan.bids_name,
                entities=dict(scan.entities),
                output_dir=str(config.output_dir),
                subdir=scan.subdir.as_posix(),
                model_dir=str(config.model_dir),
                slab_model_dir=str(config.slab_model_dir or ""),
                omp_nthreads=config.omp_nthreads,
                reports=config.reports,
                problem=scan.problem,
                bids_meta=dict(scan.bids_meta or {}),
            ),
            name=node_name(scan, index),
            n_procs=config.omp_nthreads,
            mem_gb=NODE_MEM_GB,
            overwrite=True,
        )
        nodes.append(node)
    workflow.add_nodes(nodes)
    return workflow
