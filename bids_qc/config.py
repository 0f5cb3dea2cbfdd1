"""Run configuration: one frozen dataclass built once from the command line and passed down."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bids_qc.resources import DEFAULT_MODEL, DEFAULT_SLAB_MODEL, model_dir

# the shipped models, inside the installed package (bids_qc/data/models/<name>)
DEFAULT_MODEL_DIR = model_dir(DEFAULT_MODEL)
DEFAULT_SLAB_MODEL_DIR = model_dir(DEFAULT_SLAB_MODEL)


@dataclass(frozen=True)
class Config:
    """Everything one run needs. Paths are absolute."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str = "participant"
    participant_label: tuple[str, ...] = ()
    session_id: tuple[str, ...] = ()
    bids_filters: dict = field(default_factory=dict)
    work_dir: Path | None = None
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    model_dir: Path = DEFAULT_MODEL_DIR
    slab_model_dir: Path | None = DEFAULT_SLAB_MODEL_DIR  # None: no slab motion detector
    skip_bids_validation: bool = False
    plugin: str = "MultiProc"
    plugin_args: dict = field(default_factory=dict)
    reports: bool = True
    force: bool = False
    annotations: Path | None = None
    device: str = "cpu"
    verbosity: int = 0
