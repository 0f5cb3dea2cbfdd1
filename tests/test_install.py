"""The package installs like a library: a wheel carries the models and report templates, and an
installed ``bids-qc`` runs the bundled example from any folder (no source checkout needed).

The wheel is built from a copy of the package sources (``pip wheel --no-build-isolation``: no
network, and no stale ``build/`` folder of the checkout can leak into it). The end-to-end test
installs it with ``--no-deps`` into a fresh venv that sees this environment's site-packages
(torch and friends) through a ``.pth`` line, so nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ixi_mini"
SHIPPED = ("bids_qc/data/models/conv5fc3-ixi-v2.6/manifest.json",
           "bids_qc/data/models/conv5fc3-ixi-v2.6/weights.safetensors",
           "bids_qc/data/models/conv5fc3-ixi-v2.6/reference_outputs.json",
           "bids_qc/data/models/slab-motion-agree-v1/manifest.json",
           "bids_qc/data/models/slab-motion-agree-v1/member-0.safetensors",
           "bids_qc/data/models/slab-motion-agree-v1/member-1.safetensors",
           "bids_qc/data/templates/participant.html.j2",
           "bids_qc/data/templates/group.html.j2",
           "bids_qc/data/templates/_style.css.j2",
           "bids_qc/data/templates/_annotations.js.j2",
           "bids_qc/data/tpl-MNI152NLin2009aSym_res-2_T1w.nii.gz",
           "bids_qc/data/schemas/qc_record.schema.json",
           "bids_qc/data/schemas/group_table.schema.json")


def build_wheel(tmp_path: Path) -> Path:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "version", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "bids_qc", src / "bids_qc",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(wheels), str(src)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("bids_qc-*.whl")
    return wheel


def test_wheel_carries_models_templates_and_declares_its_imports(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    missing = [n for n in SHIPPED if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    requires = [line.split(":", 1)[1].strip().lower() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    for needed in ("simpleitk", "scikit-learn", "torch==2.13.0"):
        assert any(r.startswith(needed) for r in requires), f"{needed} is not a dependency"
    assert not any(r.startswith("matplotlib") for r in requires), "matplotlib is not used"


@pytest.mark.slow
def test_installed_wheel_runs_the_example_from_another_folder(tmp_path):
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BIDS_QC_TEMPLATES")}
    env.update(NIPYPE_NO_ET="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                             "--no-deps", "--no-index", "-q", str(wheel)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # then this environment's packages (torch, nipype, ...), after the venv's own: lines of a .pth
    # are appended to sys.path, but the .pth files found there (an editable bids_qc) are not run
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "outer_env.pth").write_text("\n".join(sorted(outer)) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import bids_qc.config as c; print(c.__file__); "
                            "print(c.DEFAULT_MODEL_DIR)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).resolve().is_relative_to(site.resolve()) for p in where), where

    out = tmp_path / "out"
    bids_qc = venv / "bin" / "bids-qc"
    result = subprocess.run([str(bids_qc), str(EXAMPLE), str(out), "participant", "--nprocs", "2",
                             "--work-dir", str(tmp_path / "work")],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = json.loads((Path(where[1]) / "reference_outputs.json").read_text())["scans"]
    records = sorted(out.glob("sub-*/anat/*_qc.json"))
    assert len(records) == len(reference) == 3, records
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "ok", record["error"]
        assert Path(record["model"]["dir"]).resolve() == Path(where[1]).resolve()
        assert record["tier"] == reference[f"examples/ixi_mini/sub-{record['entities']['subject']}"
                                           f"/anat/{path.name.replace('_qc.json', '.nii.gz')}"]["tier"]
        assert path.with_name(path.name.replace(".json", ".html")).is_file(), "no report"
