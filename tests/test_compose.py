"""docker-compose.gpu.yaml and Dockerfile.gpu refer only to things that exist.

Compose cannot run here (no Docker engine, no GPU), so the files are parsed and every reference
is checked against the code: the command is accepted by our CLI parser, the port is the one the
server listens on, environment variables are read by our code, paths and versions match.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from appliance.cli import build_parser
from appliance.cli.commands import cmd_serve
from appliance.config import DEFAULT_PORT
from appliance.paths import data_dir, models_dir
from appliance.serve.vllm import API_SERVER, COMMAND_ENV
from runtimes.vllm.venv import VLLM_VERSION

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.gpu.yaml").read_text())
SERVICE = COMPOSE["services"]["appliance"]
DOCKERFILE = (ROOT / SERVICE["build"]["dockerfile"]).read_text()


def _code_reads(name: str) -> bool:
    """Whether some module of the product reads environment variable `name`."""
    for folder in ("appliance", "runtimes"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if f'"{name}"' in text or f"'{name}'" in text:
                return True
    return False


def _serve_args():
    return build_parser().parse_args(SERVICE["command"])


def test_command_is_our_serve_subcommand_with_real_flags():
    args = _serve_args()
    assert args.func is cmd_serve
    entrypoint = re.search(r'ENTRYPOINT \["([^"]+)"\]', DOCKERFILE).group(1)
    assert Path(entrypoint).name == "appliance"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["appliance"] == "appliance.cli:main"


def test_port_is_published_on_loopback_only_and_matches_the_server_and_health_check():
    port = _serve_args().port or DEFAULT_PORT
    assert port == DEFAULT_PORT
    (mapping,) = SERVICE["ports"]
    host_ip, host_port, container_port = mapping.split(":")
    assert host_ip == "127.0.0.1", "the appliance must not be reachable from other machines"
    assert int(container_port) == port and int(host_port) == port
    health = " ".join(SERVICE["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/health" in health
    assert f"EXPOSE {port}" in DOCKERFILE
    assert health.split()[1].startswith("/opt/appliance/venv/bin/")  # the venv the Dockerfile makes


def test_gpu_is_reserved():
    (device,) = SERVICE["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


@pytest.mark.parametrize("name", sorted(SERVICE["environment"]))
def test_environment_variables_are_read_by_our_code(name):
    assert _code_reads(name), f"{name} is set in compose but nothing in appliance/ or runtimes/ reads it"


def test_data_volume_is_where_the_code_looks(monkeypatch):
    home = SERVICE["environment"]["APPLIANCE_HOME"]
    monkeypatch.setenv("APPLIANCE_HOME", home)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICE["volumes"]}
    assert str(data_dir()) in mounts
    assert str(models_dir()) in mounts
    named = mounts[str(data_dir())]
    assert named in COMPOSE["volumes"]


def test_vllm_command_and_version_match_the_runtime():
    command = SERVICE["environment"][COMMAND_ENV].split()
    assert command[1:] == API_SERVER  # the module entry point, which works for every vLLM build
    assert f'APPLIANCE_VLLM_COMMAND="{" ".join(command)}"' in DOCKERFILE
    assert f"ARG VLLM_VERSION={VLLM_VERSION}" in DOCKERFILE


def test_dockerfile_copies_only_paths_that_exist():
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILE, flags=re.M)
    sources = [s for line in copied for s in line.split()]
    assert sources, "expected COPY lines"
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile.gpu copies {source}, which does not exist"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in sources, f"the image would miss the {pattern} package"
