"""Every kind of bad input (tests/corpus.py, docs/bad_input.md) through the whole app.

One participant run (the CLI in a subprocess, MultiProc with 2 processes, a tiny untrained
model) over a dataset holding every kind plus 2 good scans, then one group run; the tests
check per kind the scan's JSON, its row in the group table, its participant report and the
group report, and overall: exit code 65, the others completed, the input untouched.

As root, file modes do not stop reads, so the participant run goes through ``setpriv``
without CAP_DAC_OVERRIDE (corpus.unprivileged_prefix); without it, the ``unreadable`` kind
is skipped with a message.

The tests of that run are marked ``slow`` (the run takes 15-25 s on two cores: 38 scans, 17 of
them assessed in full); ``.ci/run`` runs them: ``pytest -m slow tests/test_bad_input.py``.
"""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from corpus import KINDS, build_corpus, run_cli, tree_state, unprivileged_prefix
from markupsafe import escape

from bids_qc.cli.run import main
from bids_qc.models import make_untrained_bundle
from bids_qc.preprocessing import ModelGrid
from bids_qc.record import ARTEFACTS

TINY_GRID = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))
UNTRAINED = "NOT trained"
PARTIAL = "partial coverage"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_untrained_bundle(tmp_path_factory.mktemp("model") / "tiny", grid=TINY_GRID)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("bad_input")
    bids, out = base / "ds", base / "out"
    kinds = build_corpus(bids)
    prefix = unprivileged_prefix()
    before = tree_state(bids)
    rc_participant, log = run_cli([bids, out, "participant", "--nprocs", "2",
                                   "--model-dir", tiny_model], prefix=prefix or ())
    rc_group = main([str(bids), str(out), "group"])
    return {"kinds": kinds, "bids": bids, "out": out, "rc": (rc_participant, rc_group),
            "log": log, "before": before, "after": tree_state(bids),
            "permissions": prefix is not None}


def record_path(out, kind, index=0):
    return out / f"sub-{kind.subject}" / "anat" / f"{kind.bids_names[index]}_qc.json"


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds the non-standard JSON constant {constant}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def expected_error_kinds(run):
    return [k for k in run["kinds"].values() if k.outcome == "error"
            and (run["permissions"] or not k.needs_permissions)]


# --------------------------------------------------------------------------- the whole run
@pytest.mark.slow
def test_exit_codes(corpus_run):
    assert corpus_run["rc"] == (65, 0), corpus_run["log"][-3000:]


@pytest.mark.slow
def test_input_dataset_untouched(corpus_run):
    assert corpus_run["after"] == corpus_run["before"]


@pytest.mark.slow
def test_one_record_per_scan_and_nothing_else(corpus_run):
    out = corpus_run["out"]
    expected = {f"{name}_qc.json" for k in corpus_run["kinds"].values() for name in k.bids_names}
    found = {p.name for p in out.rglob("*_qc.json")}
    assert found == expected
    for kind in corpus_run["kinds"].values():
        for skipped in kind.skipped:  # e.g. the .nii twin of a .nii.gz: one record only
            assert not any(r["source_file"] == skipped for r in map(strict_json,
                                                                     out.rglob("*_qc.json")))
    assert [p for p in out.rglob(".*")] == [], "temporary files left behind"


@pytest.mark.slow
def test_progress_log_and_summary(corpus_run):
    kinds = corpus_run["kinds"]
    n_scans = sum(len(k.files) for k in kinds.values())
    n_failed = sum(len(k.files) for k in expected_error_kinds(corpus_run))
    log = corpus_run["log"]
    assert f"{n_scans} scan(s) to process" in log
    assert f"finished: {n_scans} scan(s): {n_scans - n_failed} ok, {n_failed} failed" in log
    for kind in expected_error_kinds(corpus_run):
        assert re.search(rf"\] {re.escape(kind.bids_names[0])}: ERROR: .*", log), kind.name


@pytest.mark.slow
def test_group_summary(corpus_run):
    summary = strict_json(corpus_run["out"] / "group_summary.json")
    errors = expected_error_kinds(corpus_run)
    n_scans = sum(len(k.files) for k in corpus_run["kinds"].values())
    assert (summary["n_scans"], summary["n_error"]) == (n_scans, len(errors))
    stages = {}
    for kind in errors:
        stages[kind.stage] = stages.get(kind.stage, 0) + 1
    assert summary["errors_by_stage"] == stages
    assert summary["untrained_model"] is True
    read = [k for k in corpus_run["kinds"].values() if k.outcome != "error"
            or (k.needs_permissions and not corpus_run["permissions"])]
    unjudged = [k for k in read if k.outcome == "cannot_judge" or k.image == "slab"]
    assert summary["n_cannot_judge"] == sum(len(k.files) for k in unjudged)


# --------------------------------------------------------------------------- per kind
def _check_record(kind, record, permissions):
    warnings = record["warnings"]
    assert record["entities"]["subject"] == kind.subject
    if kind.outcome == "error":
        assert record["status"] == "error", f"{kind.name}: {record['error']}"
        assert record["tier"] is None
        error = record["error"]
        assert error["stage"] == kind.stage
        assert re.search(kind.reason, error["message"]), error["message"]
        return
    assert record["status"] == "ok", f"{kind.name}: {record['error']}"
    if kind.outcome == "cannot_judge":  # read without error, but no verdict: it says why
        assert record["tier"] is None and set(record["grades"].values()) == {None}
        assert (record["slab_motion"] or {}).get("score") is None, record["slab_motion"]
        assert re.search(kind.reason, record["cannot_judge"] or ""), record["cannot_judge"]
        return
    if kind.outcome == "ok" and kind.image == "head":
        assert record["tier"] in (1, 2, 3)
        assert all(record["grades"][a] in (0, 1, 2) for a in ARTEFACTS)
        assert record["cannot_judge"] is None
    else:  # a slab: assessed, the registered detectors cannot judge it, the slab detector can
        assert record["tier"] is None
        assert any(PARTIAL in w for w in warnings), warnings
        # ... except an axial slab: then nothing judges it, and the record says so
        assert re.search(r"field of view too small .* axial slab", record["cannot_judge"])
    slab = record["slab_motion"]
    if kind.image == "head":
        assert 0.0 <= slab["score"] <= 1.0, slab
    else:  # the corpus slabs are axial: the slab detector says it reads sagittal slices only
        assert slab["score"] is None and "axial slab" in slab["note"], slab
    if kind.reason:
        assert any(re.search(kind.reason, w) for w in warnings), warnings
    unexpected = [w for w in warnings if UNTRAINED not in w and PARTIAL not in w
                  and not (kind.reason and re.search(kind.reason, w))]
    assert unexpected == [], f"{kind.name}: unexpected warnings {unexpected}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["good", "good2", *[k for k in KINDS if k != "good"]])
def test_kind(corpus_run, name):
    """The JSON, the group-table row, the participant report and the group report."""
    kind = corpus_run["kinds"][name]
    if kind.needs_permissions and not corpus_run["permissions"]:
        pytest.skip("running as root without setpriv: file modes cannot be enforced")
    out = corpus_run["out"]
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t", dtype=str, keep_default_na=False)
    group_html = (out / "group_report.html").read_text(encoding="utf-8")
    for index, (bids_name, source) in enumerate(zip(kind.bids_names, kind.files)):
        path = record_path(out, kind, index)
        record = strict_json(path)
        assert record["bids_name"] == bids_name
        assert record["source_file"] == source
        _check_record(kind, record, corpus_run["permissions"])

        row = table[table["bids_name"] == bids_name]
        assert len(row) == 1, f"{bids_name} not once in the group table"
        row = row.iloc[0]
        assert row["status"] == record["status"]
        assert row["tier"] == ("n/a" if record["tier"] is None else str(record["tier"]))
        if kind.outcome == "error":
            assert row["error"] == " ".join(record["error"]["message"].split())
            assert row["error_stage"] == kind.stage
        else:
            assert row["error"] == "n/a"
        unjudged = record.get("cannot_judge")
        assert row["cannot_judge"] == (" ".join(unjudged.split()) if unjudged else "n/a")

        html = path.with_suffix(".html").read_text(encoding="utf-8")
        assert str(escape(bids_name)) in html
        assert str(escape(bids_name)) in group_html
        if kind.outcome == "error":
            message = str(escape(record["error"]["message"]))
            assert message in html, f"{kind.name}: error missing from its report"
            assert message in group_html, f"{kind.name}: error missing from the group report"
        if unjudged:
            reason = str(escape(unjudged))
            assert "Cannot judge this scan" in html and reason in html, kind.name
            assert reason in group_html, f"{kind.name}: reason missing from the group report"


# --------------------------------------------------------------------------- names
@pytest.mark.slow
def test_reports_escape_hostile_names(corpus_run):
    out = corpus_run["out"]
    kind = corpus_run["kinds"]["script_name"]
    pages = [out / "group_report.html", record_path(out, kind).with_suffix(".html")]
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "<script>alert(1)" not in html and "<img src=x onerror" not in html, page.name
        assert "&lt;script&gt;alert(1)&lt;script&gt;&lt;img src=x onerror=alert(2)&gt;" in html


@pytest.mark.slow
def test_hostile_name_assessed_without_validation(corpus_run, tiny_model, tmp_path):
    """--skip-bids-validation assesses the <script> name; its outputs stay inert text."""
    kind = corpus_run["kinds"]["script_name"]
    out = tmp_path / "out"
    rc = main([str(corpus_run["bids"]), str(out), "participant", "--skip-bids-validation",
               "--participant-label", kind.subject, "--plugin", "Linear",
               "--model-dir", str(tiny_model)])
    assert rc == 0
    assert main([str(corpus_run["bids"]), str(out), "group"]) == 0
    record = strict_json(record_path(out, kind))
    assert record["status"] == "ok" and record["bids_name"] == kind.bids_names[0]
    for page in (record_path(out, kind).with_suffix(".html"), out / "group_report.html"):
        html = page.read_text(encoding="utf-8")
        assert "<script>alert(1)" not in html and "<img src=x onerror" not in html, page.name
        assert str(escape(kind.bids_names[0])) in html
    assert corpus_run["before"] == tree_state(corpus_run["bids"])


def test_docs_table_lists_every_kind():
    """docs/bad_input.md documents the outcome of every kind of the corpus, and only those."""
    from conftest import ROOT

    text = (ROOT / "docs" / "bad_input.md").read_text(encoding="utf-8")
    table = text.split("## Kinds of input and outcomes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.M)
    assert sorted(documented) == sorted(k for k in KINDS if k != "good")
    for name, (outcome, *_rest) in KINDS.items():
        if name != "good":
            row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
            assert ("**error**" in row) == (outcome == "error"), row
