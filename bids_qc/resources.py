"""Files shipped inside the package (``bids_qc/data``): models, report templates, MNI template,
JSON Schemas of the outputs.

Found with :mod:`importlib.resources`, so they resolve the same way from a source checkout, an
editable install and a wheel. Wheels install unzipped, so every resource is a real file or folder
on disk (safetensors and nibabel need paths).
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT_MODEL = "conv5fc3-ixi-v2.6"
DEFAULT_SLAB_MODEL = "slab-motion-agree-v1"


def data_path(*parts: str) -> Path:
    """Path of ``bids_qc/data/<parts...>`` in the installed package (it may not exist)."""
    resource = files("bids_qc").joinpath("data")
    for part in parts:
        resource = resource.joinpath(part)
    return Path(str(resource))


def model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Folder of a model shipped with the package, e.g. ``model_dir("slab-motion-agree-v1")``."""
    return data_path("models", name)


def templates_dir() -> Path:
    """Folder of the report templates (``*.html.j2``) shipped with the package."""
    return data_path("templates")


def schema_path(name: str = "qc_record") -> Path:
    """Path of the JSON Schema ``bids_qc/data/schemas/<name>.schema.json`` shipped with the
    package (``qc_record``: the per-scan ``_qc.json``; ``group_table``: a row of
    ``group_T1w.tsv``)."""
    return data_path("schemas", f"{name}.schema.json")


def load_schema(name: str = "qc_record") -> dict:
    """The JSON Schema ``name`` (:func:`schema_path`) as a dict."""
    import json

    return json.loads(schema_path(name).read_text(encoding="utf-8"))
