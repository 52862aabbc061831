"""Reading the deployment kit (deploy/) in tests: the commands its image and compose file run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def load(name: str) -> Any:
    """A YAML or JSON file of deploy/."""
    text = (DEPLOY / name).read_text()
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def image_command() -> list[str]:
    """The Dockerfile's CMD (exec form): the code server."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD (\[.*\])", text, flags=re.M)
    return list(json.loads(cmd))


def compose_command(service: str) -> list[str]:
    """The command of a service of deploy/docker-compose.yaml."""
    return list(load("docker-compose.yaml")["services"][service]["command"])


def with_option(cmd: list[str], option: str, value: str) -> list[str]:
    """``cmd`` with the value of ``option`` replaced (host, port, workspace file)."""
    out = list(cmd)
    out[out.index(option) + 1] = value
    return out
