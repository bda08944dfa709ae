"""The container files, tested statically (no Docker engine here): they parse, every hpsearch
command they run parses with the real CLI, and the image installs what those commands need."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from search.cli import main
from search.spec import load_spec

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _k8s() -> list[dict]:
    docs = []
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _hpsearch_commands() -> list[list[str]]:
    """Argument lists given to the image's `hpsearch` entrypoint, from compose and k8s."""
    commands = []
    for service in _compose()["services"].values():
        if service.get("image") == "hpsearch:latest" and "entrypoint" not in service:
            commands.append(service["command"])
    for doc in _k8s():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            if container["image"] == "hpsearch:latest" and "command" not in container:
                commands.append(container["args"])
    return commands


def _shell_commands() -> list[list[str]]:
    """Commands run through `sh -c` (the dashboard), split into words."""
    found = []
    for service in _compose()["services"].values():
        entry = service.get("entrypoint")
        if entry and entry[:2] == ["sh", "-c"]:
            found.append(shlex.split(entry[2].replace("$$", "$")))
    for doc in _k8s():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            command = container.get("command")
            if command and command[:2] == ["sh", "-c"]:
                found.append(shlex.split(command[2]))
    return found


def test_the_files_parse_and_have_the_required_parts():
    services = _compose()["services"]
    assert set(services) == {"postgres", "create", "worker", "dashboard"}
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert services["create"]["command"][0] == "create"
    assert services["create"]["restart"] == "no"
    assert services["worker"]["command"][0] == "worker"
    assert services["worker"]["depends_on"]["create"]["condition"] == \
        "service_completed_successfully"
    assert services["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    kinds = sorted(doc["kind"] for doc in _k8s())
    assert kinds == ["Deployment", "Job", "Secret", "Service"]
    job = next(doc for doc in _k8s() if doc["kind"] == "Job")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] >= 2


@pytest.mark.parametrize("args", _hpsearch_commands(), ids=lambda a: " ".join(a))
def test_every_hpsearch_command_is_real_and_its_study_file_is_in_the_image(args):
    ctx = main.make_context("hpsearch", list(args))
    name, command, rest = main.resolve_command(ctx, list(args))
    assert name in {"create", "worker", "run"}
    sub = command.make_context(name, rest, parent=ctx)  # raises on an unknown flag
    spec_file = sub.params["spec_file"]
    load_spec(ROOT / spec_file)  # the image copies studies/ to /app/studies (its workdir)
    assert spec_file.startswith("studies/")


def test_commands_with_bad_flags_would_be_caught():
    with pytest.raises(click.UsageError):
        ctx = main.make_context("hpsearch", ["worker", "studies/digits.yaml", "--treads", "1"])
        name, command, rest = main.resolve_command(ctx, ["worker", "studies/digits.yaml",
                                                         "--treads", "1"])
        command.make_context(name, rest, parent=ctx)


def test_dashboard_commands_use_flags_optuna_dashboard_has():
    script = Path(sys.executable).parent / "optuna-dashboard"  # the installed console script
    help_text = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert "--host HOST" in help_text
    commands = _shell_commands()
    assert len(commands) == 2
    for words in commands:
        assert words[:2] == ["exec", "optuna-dashboard"]
        flags = [w for w in words if w.startswith("--")]
        assert flags == ["--host", "--port"]
        assert all(f"[{flag} " in help_text for flag in flags)
        assert "--allow-unsafe" not in words
        assert words[-1] == "$HPSEARCH_STORAGE"


def test_the_image_installs_what_the_commands_need_and_holds_no_url():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r'pip install "\.\[postgres\]"', dockerfile)
    assert "COPY studies ./studies" in dockerfile and "WORKDIR /app" in dockerfile
    assert 'ENTRYPOINT ["hpsearch"]' in dockerfile
    instructions = [ln for ln in dockerfile.splitlines() if not ln.startswith("#")]
    assert not any("HPSEARCH_STORAGE" in ln or "postgresql" in ln for ln in instructions)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["hpsearch"] == "search.cli:main"
    assert any(dep.startswith("psycopg") for dep in project["optional-dependencies"]["postgres"])
    assert any(dep.startswith("optuna-dashboard") for dep in project["dependencies"])
    # The URLs the files build use the driver the postgres extra installs.
    text = (DOCKER / "compose.yaml").read_text() + (DOCKER / "k8s" / "secret.yaml").read_text()
    assert set(re.findall(r"(postgresql\+\w+)://", text)) == {"postgresql+psycopg"}


def test_the_url_comes_from_the_environment_or_a_secret():
    for service in _compose()["services"].values():
        url = service.get("environment", {}).get("HPSEARCH_STORAGE")
        if url:
            assert "${POSTGRES_PASSWORD:?" in url
    for doc in _k8s():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["HPSEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == \
                "hpsearch-storage"
