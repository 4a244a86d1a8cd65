"""The Helm chart for central: helm lints and renders it, the rendered pods run real
`pulsegate` commands with real settings, and the config they get loads with central's
loader.

helm is not packaged in Debian bookworm. Built from its Go module
(`go install helm.sh/helm/v4/cmd/helm@v4.3.2`) it is found on PATH or in
~/go/bin; the tests that need it carry the `helm` marker and are opt-in.
The rendered objects are not checked against Kubernetes' API schemas (no
cluster and no kubeconform here).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # noqa: E402

import central.settings
from pulsegate.config import describe

CHART = Path(__file__).resolve().parents[2] / "packaging" / "helm" / "pulsegate-central"
ROUTING_KEY = "0123456789abcdef0123456789ABCDEF"  # 32 characters, as PagerDuty issues them


def _helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    go_bin = Path.home() / "go" / "bin" / "helm"
    return str(go_bin) if go_bin.is_file() else None


#: Tests that run the helm binary. helm is not in Debian and building it
#: from its Go module takes many minutes, so these are opt-in: `make
#: test-helm` (or `pytest -m helm`) where helm is installed; `make test` and
#: CI deselect them and run only the static checks below.
needs_helm = pytest.mark.helm


def _render(*sets: str) -> list[dict[str, Any]]:
    args = [arg for s in sets for arg in ("--set", s)]
    done = subprocess.run(
        [_helm(), "template", "rel", str(CHART), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@needs_helm
def test_helm_lint_strict_passes() -> None:
    done = subprocess.run(
        [_helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_helm
def test_renders_the_three_workloads_the_config_and_the_service() -> None:
    objects = _by_kind(_render("ingest.replicas=5", "detect.replicas=3"))

    assert objects[("Deployment", "rel-pulsegate-central-ingest")]["spec"]["replicas"] == 5
    assert ("Deployment", "rel-pulsegate-central-incidents") in objects
    detect = objects[("StatefulSet", "rel-pulsegate-central-detect")]
    assert detect["spec"]["replicas"] == 3
    env = {
        e["name"]: e.get("value")
        for e in detect["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["PULSEGATE_DETECTORS_SHARD_COUNT"] == "3"
    assert ("ConfigMap", "rel-pulsegate-central") in objects
    service = objects[("Service", "rel-pulsegate-central-incidents")]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def _containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            spec = doc["spec"]["template"]["spec"]
            found += [
                (doc["metadata"]["name"], c)
                for c in spec.get("initContainers", []) + spec["containers"]
            ]
    return found


def _pulsegate_argv(container: dict[str, Any]) -> list[str] | None:
    argv = container.get("command", []) + container.get("args", [])
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].split("exec ", 1)[1])
    return argv if argv and argv[0] == "pulsegate" else None


@needs_helm
def test_every_pulsegate_container_runs_a_real_command(dev_pulsegate: Path) -> None:
    commands = []
    for _name, container in _containers(_render()):
        argv = _pulsegate_argv(container)
        if argv is None:
            continue
        done = subprocess.run(
            [str(dev_pulsegate), *argv[1:], "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        commands.append(" ".join(a for a in argv[1:] if not a.startswith(("-", "/"))))
    assert sorted(commands) == ["central detect", "central incidents serve", "central ingest"]


@needs_helm
def test_every_pulsegate_variable_is_a_real_setting() -> None:
    """The loader ignores unknown PULSEGATE_* names, so a typo would silently do nothing."""
    known = {env for _key, env, _default in describe(central.settings.CentralSettings)}
    used = set()
    for _name, container in _containers(_render("secrets.pagerduty.existingSecret=pd")):
        used |= {e["name"] for e in container.get("env", []) if e["name"].startswith("PULSEGATE_")}
        argv = " ".join(container.get("args", []))
        used |= set(re.findall(r"\b(PULSEGATE_[A-Z_]+)=", argv))
    assert {"PULSEGATE_AMQP_URL", "PULSEGATE_DETECTORS_SHARD_INDEX"} <= used
    assert sorted(used - known) == []


@needs_helm
def test_secrets_are_references_never_values() -> None:
    objects = _by_kind(_render("secrets.pagerduty.existingSecret=pd-keys"))
    assert not any(kind == "Secret" for kind, _ in objects)

    incidents = objects[("Deployment", "rel-pulsegate-central-incidents")]["spec"]["template"][
        "spec"
    ]
    volumes = {v["name"]: v for v in incidents["volumes"]}
    assert volumes["pagerduty-keys"]["secret"]["secretName"] == "pd-keys"
    main = incidents["containers"][0]
    amqp = next(e for e in main["env"] if e["name"] == "PULSEGATE_AMQP_URL")
    assert amqp["valueFrom"]["secretKeyRef"] == {"name": "pulsegate-amqp", "key": "url"}


@needs_helm
def test_missing_amqp_secret_name_is_refused_with_a_message() -> None:
    done = subprocess.run(
        [_helm(), "template", "rel", str(CHART), "--set", "secrets.amqp.existingSecret="],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "secrets.amqp.existingSecret must name the Secret" in done.stderr


@needs_helm
def test_rendered_config_plus_routing_keys_loads_with_centrals_loader(
    tmp_path: Path, clean_env: None
) -> None:
    """Run the chart's own render-config.sh, as the init container does, on a
    mounted-Secret-like folder, and load the result with the real loader."""
    config_map = _by_kind(_render())[("ConfigMap", "rel-pulsegate-central")]["data"]
    (tmp_path / "central.toml").write_text(
        config_map["central.toml"].replace("enabled = false", "enabled = true")
    )
    (tmp_path / "render-config.sh").write_text(config_map["render-config.sh"])
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "default").write_text(ROUTING_KEY + "\n")
    (keys / "..data").mkdir()  # what a Secret volume also holds; the script must skip it

    env = {
        "PATH": os.environ["PATH"],
        "CONFIG_IN": str(tmp_path / "central.toml"),
        "KEYS_DIR": str(keys),
        "CONFIG_OUT": str(tmp_path / "out.toml"),
    }
    subprocess.run(["sh", str(tmp_path / "render-config.sh")], env=env, check=True, timeout=30)
    settings = central.settings.load_settings(tmp_path / "out.toml")

    assert settings.pagerduty.enabled is True
    assert settings.pagerduty.routing_keys == {"default": ROUTING_KEY}
    assert settings.store.backend == "cassandra"


def test_values_referenced_by_templates_exist() -> None:
    """Static check that needs no helm: each .Values.a.b path in a template is in values.yaml."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for template in (CHART / "templates").iterdir():
        for path in set(
            re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", template.read_text())
        ):
            node: Any = values
            for part in path.strip(".").split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{template.name}: .Values{path}")
                    break
                node = node[part]
    assert missing == []


def test_chart_metadata_matches_the_project() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((CHART.parents[2] / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == version
