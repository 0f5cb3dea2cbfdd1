"""The command line: labels, defaults, --version, usage errors and their exit codes."""
from __future__ import annotations

from pathlib import Path

import pytest

from bids_qc import __version__
from bids_qc.cli.parser import build_parser
from bids_qc.cli.run import main

ROOT = Path(__file__).resolve().parent.parent


def parse(*args):
    return build_parser().parse_args(["/data", "/out", "participant", *args])


def test_labels_with_and_without_prefix_are_equal():
    with_prefix = parse("--participant-label", "sub-01", "02", "--session-id", "ses-pre", "post")
    assert with_prefix.participant_label == ["01", "02"]
    assert with_prefix.session_id == ["pre", "post"]
    assert parse("--participant_label", "01", "sub-02").participant_label == ["01", "02"]


def test_defaults_and_options():
    args = parse()
    assert (args.analysis_level, args.nprocs, args.omp_nthreads, args.plugin) == (
        "participant", 1, 1, "MultiProc")
    assert args.reports is True and args.force is False and args.device == "cpu"
    assert args.participant_label == [] and args.plugin_args == {} and args.model_dir is None
    args = parse("--no-reports", "--force", "--nprocs", "2", "--omp-nthreads", "2",
                 "--plugin", "Linear", "--plugin-args", '{"sbatch_args": "-p short"}',
                 "--mem-gb", "3.5", "--skip-bids-validation", "-vv", "-w", "/tmp/w")
    assert args.reports is False and args.force is True
    assert (args.nprocs, args.omp_nthreads, args.plugin, args.mem_gb) == (2, 2, "Linear", 3.5)
    assert args.plugin_args == {"sbatch_args": "-p short"}
    assert args.skip_bids_validation and args.verbosity == 2 and args.work_dir == Path("/tmp/w")


def test_build_parser_is_pure():
    first, second = build_parser(), build_parser()
    assert first is not second
    assert first.parse_args(["a", "b", "group"]).analysis_level == "group"


def test_version_prints_the_version_file(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"bids_qc {__version__}"
    assert __version__ == (ROOT / "version").read_text().strip()


def test_help_is_useful(capsys):
    assert main(["-h"]) == 0
    text = capsys.readouterr().out
    for word in ("participant", "group", "--participant-label", "--annotations", "exit codes",
                 "--bids-filter-file", "--nprocs", "--omp-nthreads", "--no-reports"):
        assert word in text


def test_unknown_level_exits_17(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "out"), "subject"]) == 17
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    [],                                                      # nothing
    ["/data"],                                               # missing output_dir and level
    ["/data", "/out", "participant", "--nprocs", "0"],
    ["/data", "/out", "participant", "--participant-label", "sub-01_x"],
    ["/data", "/out", "participant", "--plugin-args", "{not json"],
    ["/data", "/out", "participant", "--plugin-args", "[1, 2]"],
    ["/data", "/out", "participant", "--plugin", "Threads"],
    ["/data", "/out", "participant", "--no-such-option"],
])
def test_usage_errors_exit_64(argv, capsys):
    assert main(argv) == 64
    assert "usage" in capsys.readouterr().err


def test_usage_error_is_printed_once_and_help_names_the_command(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "out"), "subject"]) == 17
    err = capsys.readouterr().err
    assert err.count("invalid choice: 'subject'") == 1, err
    assert err.startswith("usage: bids-qc ") and "bids-qc: error:" in err
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    assert "  bids-qc /data/ds /out participant" in out and "bids_qc /data" not in out
