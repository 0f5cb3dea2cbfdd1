"""HTML reports: one per scan (participant) and one per dataset (group).

The functions the app calls::

    write_participant_report(assessment, html_path) -> Path
    render_participant_report(assessment) -> str
    write_group_report(table, html_path, out_dir, *, finetune=None, slab_site=None) -> Path

Modules: ``participant_report`` and ``group_report`` build each page's context and render it
(``group_verdicts``: which verdict the group report shows, fine-tuned or shipped, and the
slab-motion flags; ``finetune_section``: the fine-tuning before/after tables);
``templating`` finds, renders and writes the Jinja2 templates; ``formatting`` holds the shared
value formatting, labels and colours; ``site_scanner`` looks up sites and scanners for the
group breakdowns; ``mosaics`` (slice mosaics, saliency overlays) and ``svg_charts`` (group
plots) draw the figures, ``png_encoding`` encodes images as data URIs.
"""
from bids_qc.reports.formatting import ANNOTATION_COLUMNS
from bids_qc.reports.group_report import render_group_report, write_group_report
from bids_qc.reports.participant_report import render_participant_report, write_participant_report
from bids_qc.reports.templating import ReportTemplateError, templates_dir

__all__ = [
    "ANNOTATION_COLUMNS",
    "ReportTemplateError",
    "render_group_report",
    "render_participant_report",
    "templates_dir",
    "write_group_report",
    "write_participant_report",
]
