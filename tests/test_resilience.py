"""Failures around the scans: unwritable or full output, interruptions and resuming, bad models.

Root writes through any file mode, so ``chmod 0555`` alone proves nothing when the tests run
as root. These tests therefore use, where the machine allows it:

- a private mount namespace (``unshare --mount``) holding a tmpfs on the output folder:
  mounted read-only (a read-only file system) or 4 kB large (a full file system);
- ``setpriv`` without CAP_DAC_OVERRIDE, under which root obeys ``chmod 0555`` like an owner.

Where neither is available they skip with a message (tests/test_app.py simulates the same
exit codes with a file where a folder must go). Everything that runs inside a private
namespace is driven by one subprocess (:data:`DRIVER`), which also lists the output folder
before the namespace, and the tmpfs with it, disappears.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
from conftest import ROOT, write_dataset_description
from corpus import head, slab, unprivileged_prefix

from bids_qc.cli.run import main
from bids_qc.models import make_untrained_bundle
from bids_qc.outputs import atomic_path, atomic_write_json
from bids_qc.preprocessing import ModelGrid

TINY_GRID = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NIPYPE_NO_ET": "1"}

#: Runs steps in one process: ["sh", command] -> exit code, ["app", argv] -> main(argv),
#: ["ls", folder] -> every path under folder (hidden ones too). Prints the results as JSON.
DRIVER = """
import json, os, subprocess, sys
from bids_qc.cli.run import main
results = []
for kind, arg in json.loads(sys.argv[1]):
    if kind == "sh":
        results.append(subprocess.run(arg, shell=True).returncode)
    elif kind == "app":
        results.append(main(arg))
    else:
        results.append(sorted(os.path.relpath(os.path.join(d, n), arg)
                              for d, ds, fs in os.walk(arg) for n in ds + fs))
print("RESULTS " + json.dumps(results))
"""


def drive(steps, prefix=()):
    """Run ``steps`` (see :data:`DRIVER`) in one subprocess; return (results, stderr)."""
    steps = [[kind, [str(a) for a in arg] if isinstance(arg, list) else str(arg)]
             for kind, arg in steps]
    result = subprocess.run([*prefix, sys.executable, "-c", DRIVER, json.dumps(steps)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, f"driver failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULTS "):]), result.stderr


@lru_cache(maxsize=1)
def private_mounts() -> tuple[str, ...] | None:
    """``unshare`` prefix giving a private mount namespace where tmpfs can be mounted, or None."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    prefix = (unshare, "--mount", "--propagation", "private")
    with tempfile.TemporaryDirectory() as folder:
        try:
            probe = subprocess.run([*prefix, "mount", "-t", "tmpfs", "-o", "size=4k", "probe",
                                    folder], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
    return prefix if probe.returncode == 0 else None


def mount(options: str, target: Path) -> list:
    return ["sh", f"mount -t tmpfs -o {options} bids_qc_test {shlex.quote(str(target))}"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_untrained_bundle(tmp_path_factory.mktemp("model") / "tiny", grid=TINY_GRID)


def make_dataset(root: Path, slabs=("A1", "A2"), heads=()) -> Path:
    """Slabs are assessed in a blink (no registration); heads take seconds."""
    write_dataset_description(root)
    for i, sub in enumerate(slabs):
        path = root / f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(slab(i), path)
    for i, sub in enumerate(heads):
        path = root / f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(head(i), path)
    return root


@pytest.fixture(scope="module")
def slab_ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("slabs") / "ds")


def participant(ds: Path, out: Path, model: Path) -> list:
    """A :func:`drive` step: the participant level, Linear plugin, validation off."""
    return ["app", [ds, out, "participant", "--plugin", "Linear", "--skip-bids-validation",
                    "--model-dir", model]]


# --------------------------------------------------------------------------- unwritable output
def test_read_only_file_system_exits_73(slab_ds, tiny_model, tmp_path):
    prefix = private_mounts()
    if prefix is None:
        pytest.skip("no private mount namespace (unshare + mount): read-only file systems are "
                    "simulated in test_app.py::test_uncreatable_output_exits_73 only")
    out = tmp_path / "out"
    out.mkdir()
    run = participant(slab_ds, out, tiny_model)
    results, log = drive([
        mount("ro,size=1m", out), run,                               # read-only from the start
        ["sh", f"mount -o remount,rw {out}"], run,                   # writable: the scans run
        ["sh", f"mount -o remount,ro {out}"], ["app", [slab_ds, out, "group"]],  # then r/o
        ["ls", out],
    ], prefix)
    assert results[:6] == [0, 73, 0, 0, 0, 73], log[-3000:]
    assert f"cannot create or write output_dir {out}" in log
    assert "Read-only file system" in log
    files = results[6]
    assert "group_T1w.tsv" not in files and not [f for f in files if "/." in f or f[0] == "."]


def test_read_only_folder_exits_73(slab_ds, tiny_model, tmp_path):
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("root without setpriv: chmod 0555 cannot stop root; see "
                    "test_app.py::test_uncreatable_output_exits_73 for the simulation")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    results, log = drive([participant(slab_ds, locked, tiny_model),
                          participant(slab_ds, locked / "out", tiny_model),
                          ["ls", locked]], prefix)
    assert results == [73, 73, []], log[-3000:]
    assert f"cannot create or write output_dir {locked}" in log
    assert "Permission denied" in log


def test_full_file_system_exits_74(slab_ds, tiny_model, tmp_path):
    prefix = private_mounts()
    if prefix is None:
        pytest.skip("no private mount namespace (unshare + mount): a full disk is simulated "
                    "in test_app.py::test_write_failure_exits_74 only")
    out = tmp_path / "out"
    out.mkdir()
    run = participant(slab_ds, out, tiny_model)
    # 4 kB: dataset_description.json fills the only page, then every scan output fails
    results, log = drive([mount("size=4k", out), run, ["ls", out], run, ["ls", out]], prefix)
    assert results[0] == 0 and results[1] == 74 and results[3] == 74, log[-3000:]
    assert "could not write the outputs of 2 scan(s)" in log
    assert f"cannot create or write output_dir {out}" in log  # the rerun: full at the start
    assert "No space left on device" in log
    expected = ["dataset_description.json", "sub-A1", "sub-A1/anat", "sub-A2", "sub-A2/anat"]
    assert results[2] == expected and results[4] == expected  # no partial or hidden file


def test_uncreatable_work_dir_exits_73(slab_ds, tiny_model, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the work folder must go")
    rc = main([str(slab_ds), str(tmp_path / "out"), "participant", "-w", str(blocker / "work"),
               "--skip-bids-validation", "--model-dir", str(tiny_model)])
    assert rc == 73
    assert any(f"cannot create the work folder {blocker / 'work'}" in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")
    assert not list((tmp_path / "out").rglob("*_qc.json"))


# --------------------------------------------------------------------------- interruptions
class App:
    """The CLI in its own process group (as a terminal runs it); stderr kept in a file."""

    def __init__(self, args, log: Path):
        self.log = log
        with open(log, "w") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), *map(str, args)], cwd=ROOT, env=ENV,
                stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True)

    def wait_until(self, condition, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"run ended early:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out:\n{self.text()[-3000:]}"
            time.sleep(0.1)

    def signal(self, signum) -> int:
        os.killpg(self.proc.pid, signum)  # like Ctrl-C in a terminal: the whole group
        return self.proc.wait(timeout=120)

    def text(self) -> str:
        return self.log.read_text(errors="backslashreplace")


def stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.rglob("*_qc.json")}


def hidden(out: Path) -> list[str]:
    return [p.name for p in out.rglob(".*")]


def complete(path: Path) -> dict:
    record = json.loads(path.read_text())
    assert record["status"] == "ok" and record["timings"]["total"] >= 0
    return record


@pytest.mark.slow  # five runs of the CLI and one real registration: ~1 min on a busy machine
def test_interrupted_runs_leave_no_partial_files_and_resume(tiny_model, tmp_path):
    """Ctrl-C, SIGTERM and SIGKILL while a scan is assessed; then resume, then --force.

    Recomputation is counted from the JSON files' mtimes: a resumed run rewrites only the
    scan that was never finished.
    """
    bids = make_dataset(tmp_path / "ds", slabs=("A1", "A2", "A3"), heads=("Z1",))
    out = tmp_path / "out"
    slabs = [f"sub-A{i}_T1w_qc.json" for i in (1, 2, 3)]
    last = out / "sub-Z1/anat/sub-Z1_T1w_qc.json"
    args = [bids, out, "participant", "--skip-bids-validation", "--model-dir", tiny_model]

    def interrupt(signum, run: int, *, first: bool = False) -> tuple[int, str]:
        work = tmp_path / f"work{run}"
        app = App([*args, "-w", work], tmp_path / f"run{run}.log")
        if first:
            app.wait_until(lambda: len(stamps(out)) == 3)
        app.wait_until(lambda: any(work.glob("*/qc_*_sub_Z1_T1w")))  # Z1 is being assessed
        time.sleep(1.0)
        return app.signal(signum), app.text()

    rc, log = interrupt(signal.SIGINT, 1, first=True)
    assert rc == 130 and "interrupted; finished scans are complete" in log, log[-3000:]
    assert sorted(stamps(out)) == slabs and not last.exists()
    assert all(complete(p) for p in out.rglob("*_qc.json"))
    assert hidden(out) == []
    done = stamps(out)

    rc, log = interrupt(signal.SIGTERM, 2)
    assert rc == 130 and "terminated (SIGTERM)" in log, log[-3000:]
    assert "1 scan(s) to process (3 already done" in log
    assert stamps(out) == done and hidden(out) == []

    rc, _ = interrupt(signal.SIGKILL, 3)
    assert rc == -signal.SIGKILL and stamps(out) == done
    # what a write cut by SIGKILL leaves: hidden temporaries of the unfinished scan
    stale = [last.parent / ".sub-Z1_T1w_qc.k9x2.tmp.json", last.parent / ".sub-Z1_T1w_qc.html.77.tmp"]
    last.parent.mkdir(parents=True, exist_ok=True)
    stale[0].write_text('{"status": "ok", "tier"')
    stale[1].write_text("<html><body>half")
    assert main([str(bids), str(out), "group", "--no-reports"]) == 0  # temporaries ignored
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    assert sorted(table["bids_name"]) == ["sub-A1_T1w", "sub-A2_T1w", "sub-A3_T1w"]

    resumed = App(args, tmp_path / "resume.log")
    assert resumed.proc.wait(timeout=600) == 0, resumed.text()[-3000:]
    assert "1 scan(s) to process (3 already done, skipped" in resumed.text()
    after = stamps(out)
    assert [n for n in after if after[n] != done.get(n)] == [last.name]  # only Z1 computed
    assert complete(last)["tier"] in (1, 2, 3)
    assert hidden(out) == [] and not any(p.exists() for p in stale)

    forced = App([*args, "--force", "--participant-label", "A2", "--no-reports"],
                 tmp_path / "force.log")
    assert forced.proc.wait(timeout=600) == 0, forced.text()[-3000:]
    again = stamps(out)
    assert [n for n in again if again[n] != after[n]] == ["sub-A2_T1w_qc.json"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub-01" / "anat" / "sub-01_T1w_qc.json"
    atomic_write_json(target, {"status": "ok", "snr": float("nan")})
    assert json.loads(target.read_text()) == {"status": "ok", "snr": None}
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text('{"status": "err')
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing
    assert json.loads(target.read_text())["status"] == "ok"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


# --------------------------------------------------------------------------- model folders
def _corrupt_weights(folder: Path) -> str:
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    return "checksum mismatch for weights.safetensors"


def _wrong_shape(folder: Path) -> str:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"]["shape"] = [40, 40, 40]  # the weights were made for 16^3 (2x2x2 pooled)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return "has shape"


def _no_manifest(folder: Path) -> str:
    (folder / "manifest.json").unlink()
    return "no manifest.json"


def _missing_weights(folder: Path) -> str:
    (folder / "weights.safetensors").unlink()
    return "weights file weights.safetensors is missing"


@pytest.mark.parametrize("damage", [_corrupt_weights, _wrong_shape, _no_manifest,
                                    _missing_weights], ids=lambda f: f.__name__.strip("_"))
def test_unusable_model_folder_exits_78_naming_it(slab_ds, tiny_model, tmp_path, caplog, damage):
    folder = tmp_path / "my-model-v3"
    shutil.copytree(tiny_model, folder)
    reason = damage(folder)
    out = tmp_path / "out"
    rc = main([str(slab_ds), str(out), "participant", "--plugin", "Linear",
               "--skip-bids-validation", "--model-dir", str(folder)])
    assert rc == 78
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"model folder {folder}" in m and reason in m for m in errors), errors
    assert not list(out.rglob("*_qc.json"))  # refused before any scan
