"""Dagster as deployed, as processes: ``dagster code-server`` (gRPC, the image's entry point),
``dagster-webserver`` and ``dagster-daemon`` (deploy/docker-compose.yaml's commands), the
workspace (deploy/workspace.yaml) pointing at the code server. Each process leads its own
session, binds 127.0.0.1 and is stopped by its pid.

Used by tests/e2e/test_services.py and by the chaos run on the production profile
(:mod:`tests.e2e.chaos`, ``--services``).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.deploy_kit import compose_command, image_command, load, with_option
from tests.e2e.helpers import VENV_BIN, free_port, restore_signals, stop_session, wait_until


class Services:
    """The three Dagster processes, each the leader of its own session, stopped by pid."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.ui_port = free_port()

    def start(self, name: str, cmd: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs.append(
            subprocess.Popen(
                cmd,
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=restore_signals,
                start_new_session=True,
            )
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_session(proc)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.ui_port}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
        assert "errors" not in doc, doc["errors"]
        return dict(doc["data"])

    def logs(self, tail: int | None = 3000) -> str:
        """The processes' logs, each cut to its last ``tail`` characters (None: whole)."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-(tail or 0) :]}"
            for p in sorted(self.folder.glob("*.log"))
        )


def production_workspace(folder: Path, port: int) -> Path:
    """deploy/workspace.yaml with the code server at 127.0.0.1:``port``."""
    workspace = load("workspace.yaml")
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=port)
    path = folder / "workspace.yaml"
    path.write_text(yaml.safe_dump(workspace))
    return path


LOCATION_NAME = load("workspace.yaml")["load_from"][0]["grpc_server"]["location_name"]
WORKSPACE = """
{ workspaceOrError { ... on Workspace {
    locationEntries { name locationOrLoadError { __typename } } } } }
"""


@contextmanager
def production_services(env: dict[str, str], folder: Path) -> Iterator[Services]:
    """The code server, the webserver and the daemon with ``env`` (DAGSTER_HOME holding the
    production dagster.yaml, its schema migrated here first), their logs in ``folder``; yields
    once the webserver has loaded the code location, stops all three by pid afterwards."""
    subprocess.run(
        [str(VENV_BIN / "dagster"), "instance", "migrate"], env=env, check=True, capture_output=True
    )
    grpc_port = free_port()
    workspace = production_workspace(folder, grpc_port)
    services = Services(env, folder)
    try:
        # the commands of the image (deploy/Dockerfile) and of deploy/docker-compose.yaml
        code = with_option(image_command(), "-h", "127.0.0.1")
        services.start("code-server", with_option(code, "-p", str(grpc_port)))
        web = with_option(compose_command("webserver"), "-w", str(workspace))
        web = with_option(with_option(web, "-h", "127.0.0.1"), "-p", str(services.ui_port))
        services.start("webserver", web)
        services.start("daemon", with_option(compose_command("daemon"), "-w", str(workspace)))

        def location_loaded() -> bool:
            # the webserver answers before it reached the code server: wait for the location
            try:
                data = services.graphql(WORKSPACE)
            except OSError:
                return False
            entries = data["workspaceOrError"].get("locationEntries") or []
            return any(
                e["name"] == LOCATION_NAME
                and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
                for e in entries
            )

        wait_until(location_loaded, timeout=180, interval=2, what="the code location")
        yield services
    finally:
        services.stop()
