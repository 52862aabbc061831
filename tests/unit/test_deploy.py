"""The deployment kit (deploy/) parses and names only settings that exist.

What cannot run here (no container daemon, no cluster) is held to what can: the instance files
validate against Dagster's own config schema (the run launcher's too), the commands of the image
and the compose file are the ones tests/e2e/test_services.py runs as processes, every variable
the kit sets is one the code or the instance file reads, and the Helm values use only keys of
Dagster's chart.
"""

import re
import shutil
from typing import Any

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config

from tests.deploy_kit import DEPLOY, REPO, compose_command, image_command, load

# The keys of Dagster's Helm chart (1.13) that deploy/helm/values.yaml may use, as nested
# dicts; None = free-form below (Kubernetes objects, maps of names).
HELM_KEYS: dict[str, Any] = {
    "dagster-user-deployments": {
        "enabled": None,
        "deployments": [
            {
                "name": None,
                "image": {"repository": None, "tag": None, "pullPolicy": None},
                "dagsterApiGrpcArgs": None,
                "port": None,
                "env": None,
                "envConfigMaps": None,
                "envSecrets": None,
                "includeConfigInLaunchedRuns": {"enabled": None},
                "resources": None,
                "annotations": None,
                "nodeSelector": None,
            }
        ],
    },
    "runLauncher": {
        "type": None,
        "config": {
            "k8sRunLauncher": {
                "envConfigMaps": None,
                "envSecrets": None,
                "envVars": None,
                "resources": None,
                "runK8sConfig": None,
                "jobNamespace": None,
                "labels": None,
            }
        },
    },
    "postgresql": {
        "enabled": None,
        "postgresqlHost": None,
        "postgresqlUsername": None,
        "postgresqlPassword": None,
        "postgresqlDatabase": None,
        "postgresqlParams": None,
        "service": {"port": None},
    },
    "generatePostgresqlPasswordSecret": None,
    "serviceAccount": {"create": None, "name": None, "annotations": None},
    "dagsterDaemon": {
        "runCoordinator": {
            "enabled": None,
            "type": None,
            "config": {
                "queuedRunCoordinator": {"maxConcurrentRuns": None, "tagConcurrencyLimits": None}
            },
        },
        "runMonitoring": {
            "enabled": None,
            "startTimeoutSeconds": None,
            "pollIntervalSeconds": None,
            "maxResumeRunAttempts": None,
        },
    },
    "retention": {
        "enabled": None,
        "schedule": {"purgeAfterDays": None},
        "sensor": {
            "purgeAfterDays": {"failure": None, "skipped": None, "started": None, "success": None}
        },
    },
    "additionalInstanceConfig": None,
    "telemetry": {"enabled": None},
}


def unknown_keys(value: Any, allowed: Any, path: str = "") -> list[str]:
    """Key paths of ``value`` that ``allowed`` (see :data:`HELM_KEYS`) does not name."""
    if allowed is None:
        return []
    if isinstance(allowed, list):
        return [
            p
            for i, item in enumerate(value)
            for p in unknown_keys(item, allowed[0], f"{path}[{i}]")
        ]
    out = []
    for key, sub in value.items():
        if key not in allowed:
            out.append(f"{path}.{key}".lstrip("."))
        else:
            out += unknown_keys(sub, allowed[key], f"{path}.{key}")
    return out


def env_names_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for folder in ("dynamo_cdc", "dagster_project"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"DYNAMO_CDC_[A-Z0-9_]+", path.read_text()))
    return names


def env_names_of_instance_files() -> set[str]:
    names: set[str] = set()
    for path in (DEPLOY / "dagster.yaml", DEPLOY / "ecs" / "dagster.yaml"):
        names |= set(re.findall(r"env: ([A-Z0-9_]+)", path.read_text()))
        names |= set(re.findall(r"env:\n\s+([A-Z0-9_]+)", path.read_text()))
    return names


def test_every_file_of_the_kit_parses():
    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "Dockerfile",
        "dagster.yaml",
        "docker-compose.yaml",
        "workspace.yaml",
        "env.example",
        "helm/values.yaml",
        "ecs/dagster.yaml",
        "ecs/task-definition.json",
    }
    for path in files:
        rel = path.relative_to(DEPLOY).as_posix()
        if path.suffix in (".yaml", ".json"):
            assert load(rel) is not None, rel


@pytest.mark.parametrize("name", ["dagster.yaml", "ecs/dagster.yaml"])
def test_the_instance_files_validate_against_dagsters_schema(name, tmp_path, monkeypatch):
    for var in env_names_of_instance_files():
        monkeypatch.setenv(var, "5432" if var.endswith("PORT") else "x")
    shutil.copy(DEPLOY / name, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises on an unknown or bad setting
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    launcher = config.get("run_launcher")
    if launcher:
        from dagster_aws.ecs import EcsRunLauncher

        assert (launcher["module"], launcher["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
        result = validate_config(EcsRunLauncher.config_type(), launcher["config"])
        assert result.success, [e.message for e in result.errors or []]


def test_a_misspelt_instance_setting_is_refused(tmp_path):
    text = (DEPLOY / "dagster.yaml").read_text().replace("default_limit", "defualt_limit")
    (tmp_path / "dagster.yaml").write_text(text)
    with pytest.raises(Exception, match="defualt_limit"):
        dagster_instance_config(str(tmp_path))


def test_the_ecs_instance_is_the_base_instance_plus_the_ecs_run_launcher():
    ecs = load("ecs/dagster.yaml")
    ecs.pop("run_launcher")
    assert ecs == load("dagster.yaml")


def test_the_helm_values_use_only_keys_of_dagsters_chart(tmp_path):
    values = load("helm/values.yaml")
    assert unknown_keys(values, HELM_KEYS) == []
    assert unknown_keys({"runLauncher": {"tpye": 1}}, HELM_KEYS) == ["runLauncher.tpye"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    # the instance settings the chart does not model are valid Dagster instance settings
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(values["additionalInstanceConfig"]))
    dagster_instance_config(str(tmp_path))
    grpc_args = values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"]
    assert grpc_args[:2] == image_command()[3:5]  # the module the image serves


def test_the_image_copies_files_that_exist_and_serves_the_project_module():
    text = (DEPLOY / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for source in sources.split():
            assert (REPO / source).exists(), source
    cmd = image_command()
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-m") + 1] == "dagster_project.location"
    assert compose_command("daemon")[:2] == ["dagster-daemon", "run"]
    assert compose_command("webserver")[0] == "dagster-webserver"
    workspace = load("workspace.yaml")["load_from"][0]["grpc_server"]
    assert (workspace["host"], workspace["port"]) == ("code", int(cmd[cmd.index("-p") + 1]))


def test_every_variable_the_kit_sets_is_read_by_the_code_or_the_instance():
    known = (
        env_names_read_by_the_code()
        | env_names_of_instance_files()
        | {
            "DAGSTER_HOME",
            "AWS_DEFAULT_REGION",
        }
    )
    example = [
        line.split("=", 1)[0]
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    container = load("ecs/task-definition.json")["containerDefinitions"][0]
    ecs = [e["name"] for e in container["environment"] + container["secrets"]]
    compose = list(load("docker-compose.yaml")["x-dagster"]["environment"])
    for name in example + ecs + compose:
        assert name in known, name
    home = next(e["value"] for e in container["environment"] if e["name"] == "DAGSTER_HOME")
    assert (
        f"COPY deploy/ecs/dagster.yaml {home}/dagster.yaml" in (DEPLOY / "Dockerfile").read_text()
    )
