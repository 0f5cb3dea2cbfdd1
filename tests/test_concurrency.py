"""Runs that overlap (issue 28): two participant runs on one scan, a full disk in the middle of
a scan's outputs, a group run while a participant run is still writing."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import nibabel as nib
import pytest
from conftest import ROOT, write_dataset_description
from corpus import head

from bids_qc.models import make_untrained_bundle
from bids_qc.outputs import (
    atomic_path,
    incomplete_scans,
    is_stale_temporary,
    remove_stale_temporaries,
    start_run_marker,
    temporary_path,
)
from bids_qc.preprocessing import ModelGrid

TINY_GRID = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NIPYPE_NO_ET": "1"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_untrained_bundle(tmp_path_factory.mktemp("model") / "tiny", grid=TINY_GRID)


@pytest.fixture(scope="module")
def one_head(tmp_path_factory):
    """One full tiny head: registered, so every output is written (JSON, HTML, model input)."""
    root = tmp_path_factory.mktemp("one") / "ds"
    write_dataset_description(root)
    path = root / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(head(0), str(path))
    return root


# --------------------------------------------------------------------------- temporaries
def test_temporary_names_are_unique_per_process_and_write(tmp_path):
    target = tmp_path / "sub-01_T1w_qc.json"
    names = {temporary_path(target).name for _ in range(200)}
    assert len(names) == 200
    name = next(iter(names))
    assert name.startswith(".sub-01_T1w_qc.json.") and name.endswith(".tmp.json")
    assert f"-{os.getpid()}-" in name
    assert temporary_path(tmp_path / "x_T1w.nii.gz").name.endswith(".tmp.nii.gz")


def test_cleanup_deletes_only_temporaries_nobody_is_writing(tmp_path):
    """Another live process's temporary survives; a dead process's and our own go."""
    target = tmp_path / "sub-01_T1w_qc.json"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        mine = temporary_path(target)
        host = mine.name.split(".")[-3].rsplit("-", 2)[0]
        others = {pid: target.with_name(f".{target.name}.{host}-{pid}-0123abcd.tmp.json")
                  for pid in (live.pid, dead.pid)}
        foreign = target.with_name(f".{target.name}.elsewhere-1-0123abcd.tmp.json")
        for path in [mine, *others.values(), foreign]:
            path.write_text("{")
        assert not is_stale_temporary(others[live.pid]) and not is_stale_temporary(foreign)
        removed = remove_stale_temporaries([target])
        assert sorted(removed) == sorted([mine, others[dead.pid]])
        assert others[live.pid].exists() and foreign.exists()
        old = time.time() - 2 * 3600
        os.utime(foreign, (old, old))  # another host's, hours old: abandoned
        assert remove_stale_temporaries([target]) == [foreign]
    finally:
        live.kill()
        live.wait()


def test_a_second_run_starting_to_write_keeps_the_first_runs_temporary(tmp_path):
    """The race of issue 28, made deterministic: run A is writing a scan's JSON when run B, about
    to write the same scan, cleans up. B used to delete A's temporary (A: FileNotFoundError,
    exit 74)."""
    target = tmp_path / "sub-01_T1w_qc.json"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from bids_qc.outputs import atomic_path\n"
        f"with atomic_path(Path({str(target)!r})) as tmp:\n"
        "    tmp.write_text('{}'); print('writing', flush=True); time.sleep(2)\n"
        "print('replaced', flush=True)\n")],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    assert remove_stale_temporaries([target]) == []  # B's cleanup
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0 and out.strip() == "replaced", err
    assert target.read_text() == "{}"


def test_a_failed_write_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "sub-01_T1w_qc.html"
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_text("<html>half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(target.parent.iterdir()) == []


def test_full_disk_at_the_json_leaves_no_report_without_it(one_head, tiny_model, tmp_path,
                                                           monkeypatch):
    """The HTML and the model input are written before the JSON: if the JSON cannot be written
    they are removed, so no output exists without its JSON (the next run redoes the scan)."""
    from bids_qc.interfaces import assess

    def full(path, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(assess, "atomic_write_json", full)
    scan = one_head / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    summary = assess.qc_scan(in_file=str(scan), source_file="sub-01/anat/sub-01_T1w.nii.gz",
                             bids_name="sub-01_T1w", entities={"subject": "01"},
                             output_dir=str(tmp_path), subdir="sub-01/anat",
                             model_dir=str(tiny_model))
    assert "No space left on device" in summary["io_error"]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


# --------------------------------------------------------------------------- group during a run
def test_group_run_names_the_scans_a_running_participant_run_has_not_written(tmp_path, caplog):
    from bids_qc.cli.run import main
    from bids_qc.outputs import atomic_write_json
    from bids_qc.record import new_record

    out = tmp_path / "out"
    jsons = {s: out / f"sub-{s}" / "anat" / f"sub-{s}_T1w_qc.json" for s in ("01", "02", "03")}
    marker = start_run_marker(out, [(f"sub-{s}/anat/sub-{s}_T1w.nii.gz", p)
                                    for s, p in jsons.items()])
    record = new_record("sub-01/anat/sub-01_T1w.nii.gz")
    record.update(bids_name="sub-01_T1w", entities={"subject": "01"}, tier=1)
    atomic_write_json(jsons["01"], record)  # one of three written so far
    (tmp_path / "ds").mkdir()
    assert main([str(tmp_path / "ds"), str(out), "group"]) == 0
    missing = ["sub-02/anat/sub-02_T1w.nii.gz", "sub-03/anat/sub-03_T1w.nii.gz"]
    assert [s["source_file"] for s in incomplete_scans(out)] == missing
    summary = json.loads((out / "group_summary.json").read_text())
    assert [s["source_file"] for s in summary["incomplete"]] == missing
    assert {s["run"] for s in summary["incomplete"]} == {"running"}
    assert "INCOMPLETE: a participant run" in caplog.text and "has not written 2 scan(s)" in caplog.text
    html = (out / "group_report.html").read_text(encoding="utf-8")
    assert 'id="incomplete"' in html and all(m in html for m in missing)
    marker.unlink()  # the run ended: nothing incomplete any more
    assert incomplete_scans(out) == []


# --------------------------------------------------------------------------- two runs, one scan
@pytest.mark.slow
def test_two_participant_runs_on_one_scan_20_rounds(one_head, tiny_model, tmp_path):
    """Both runs write the same outputs at the same time (--force): both must end with exit 0
    and leave one complete set of outputs and no temporary (before: exit 74 in 2 of 15)."""
    failures = []
    for round_ in range(20):
        out = tmp_path / f"out{round_}"
        procs = [subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), str(one_head), str(out), "participant",
             "--force", "--plugin", "Linear", "--model-dir", str(tiny_model)],
            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                failures.append(f"round {round_}: exit {proc.returncode}\n{err[-1500:]}")
        anat = out / "sub-01" / "anat"
        record = json.loads((anat / "sub-01_T1w_qc.json").read_text())
        assert record["status"] == "ok" and record["tier"] in (1, 2, 3), round_
        assert (anat / "sub-01_T1w_qc.html").is_file(), round_
        assert len(list(anat.glob("*desc-preproc_T1w.nii.gz"))) == 1, round_
        assert [p.name for p in out.rglob(".*")] == [], round_
    assert failures == []
