"""The Jinja2 templates of the reports: where they are and how they are rendered (the reports
are written with :func:`bids_qc.outputs.atomic_write_text`, as every derivative).

Templates ship inside the package, ``bids_qc/data/templates`` (autoescape on). Every figure
is embedded as a base64 PNG or inline SVG and all scripts are inline, so a report is one file
that opens offline.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from bids_qc.exceptions import BidsQcError
from bids_qc.reports.formatting import fmt
from bids_qc.resources import templates_dir as _shipped_templates

TEMPLATES_ENV = "BIDS_QC_TEMPLATES"
DEFAULT_TEMPLATES = _shipped_templates()


class ReportTemplateError(BidsQcError, FileNotFoundError):
    """The report templates folder is missing (a broken install, or a wrong $BIDS_QC_TEMPLATES)."""


def templates_dir() -> Path:
    """Folder of the ``*.html.j2`` templates: ``$BIDS_QC_TEMPLATES`` or the package's own
    ``bids_qc/data/templates``."""
    folder = Path(os.environ.get(TEMPLATES_ENV) or DEFAULT_TEMPLATES)
    if not (folder / "participant.html.j2").is_file() or not (folder / "group.html.j2").is_file():
        raise ReportTemplateError(
            f"report templates not found in {folder} (expected participant.html.j2 and "
            f"group.html.j2). Reinstall bids_qc (the package ships them in bids_qc/data/templates), "
            f"or set {TEMPLATES_ENV} to a folder holding them.")
    return folder


@lru_cache(maxsize=4)
def _environment(folder: str):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def render_template(name: str, context: dict) -> str:
    """HTML text of template ``name`` rendered with ``context``."""
    return _environment(str(templates_dir())).get_template(name).render(**context)

