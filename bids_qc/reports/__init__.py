"""HTML reports: one per scan (participant) and one per dataset (group).

The functions the app calls::

    write_participant_report(assessment, html_path) -> Path
    render_participant_report(assessment) -> str
    write_group_report(table, html_path, out_dir, *, finetune=None) -> Path
"""
from bids_qc.reports.render import (
    ANNOTATION_COLUMNS,
    ReportTemplateError,
    render_group_report,
    render_participant_report,
    templates_dir,
    write_group_report,
    write_participant_report,
)

__all__ = [
    "ANNOTATION_COLUMNS",
    "ReportTemplateError",
    "render_group_report",
    "render_participant_report",
    "templates_dir",
    "write_group_report",
    "write_participant_report",
]
