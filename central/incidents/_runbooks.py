"""Remediation runbooks: Terraform/OpenTofu working directories per incident kind.

When an incident of a mapped kind opens, the service queues a ``plan`` step in
the ``runbook`` outbox. :class:`RunbookRunner` copies the runbook's directory
to a work directory of that incident (so concurrent incidents and the shipped
files stay apart), writes the variables to ``pulsegate.auto.tfvars.json``, and
runs ``init`` and ``plan -out``. ``apply`` of that saved plan runs only after
approval (policy ``approve``) or at once (policy ``auto``); ``plan_only`` never
applies. Output and result go on the incident's timeline; a timeout or failure
is recorded there, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

from central.incidents._errors import IncidentError
from central.incidents._model import Incident, OutboxEvent
from central.incidents._service import CHANNEL_RUNBOOK, IncidentService
from central.incidents.settings import RunbookSettings

__all__ = ["RunbookRunner", "find_binary"]

logger = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 8000
"""Tail of a step's output kept on the timeline: enough for a plan summary, not a whole provider log."""

_SKIP_COPY = shutil.ignore_patterns(".terraform", "*.tfstate", "*.tfstate.backup", "*.tfplan", ".terraform.lock.hcl")
_PLAN_FILE = "pulsegate.tfplan"


def find_binary(configured: str = "") -> str | None:
    """The runbook binary: ``configured`` if set, else ``tofu``, else ``terraform`` on PATH."""
    for name in ([configured] if configured else ["tofu", "terraform"]):
        found = shutil.which(name)
        if found:
            return found
    return None


class RunbookRunner:
    """Runs queued runbook steps and records their outcome on the incident.

    Args:
        service: the incident service (for reading incidents and recording results).
        settings: [runbooks] settings.
        work_root: where per-incident working directories go (under central's state dir).
    """

    def __init__(self, service: IncidentService, settings: RunbookSettings, work_root: Path) -> None:
        self.service = service
        self.settings = settings
        self.work_root = Path(work_root)

    def run_pending(self, limit: int = 10) -> int:
        """Run up to ``limit`` queued steps, oldest first; returns how many ran."""
        events = self.service.store.outbox_pending(CHANNEL_RUNBOOK, limit)
        for event in events:
            self.run_event(event)
            self.service.store.outbox_done(event)
        return len(events)

    def run_event(self, event: OutboxEvent) -> None:
        """Run one queued step and record it; failures are recorded, not raised."""
        try:
            incident = self.service.get(event.incident_id)
        except IncidentError as exc:
            logger.error("runbook step for %s skipped: %s", event.incident_id, exc)
            return
        step = event.body.get("action", "plan")
        ok, output = self._run_step(incident, step)
        try:
            self.service.record_runbook_result(incident.id, step, ok, output[-MAX_OUTPUT_CHARS:])
        except IncidentError as exc:
            logger.error("runbook %s result for incident %s not recorded: %s", step, incident.id, exc)

    def _run_step(self, incident: Incident, step: str) -> tuple[bool, str]:
        runbook = self.settings.runbooks.get(incident.kind)
        if runbook is None:
            return False, f"no runbook configured for kind {incident.kind!r}"
        binary = find_binary(self.settings.binary)
        if binary is None:
            return False, "neither tofu nor terraform is on PATH; install one or set runbooks.binary"
        workdir = self.work_root / incident.id
        if step == "plan":
            try:
                self._prepare(workdir, Path(runbook["directory"]), self._variables(runbook, incident))
            except OSError as exc:
                return False, f"cannot prepare {workdir}: {exc}"
            commands = [["init", "-input=false", "-no-color"],
                        ["plan", "-input=false", "-no-color", f"-out={_PLAN_FILE}"],
                        ["show", "-no-color", "-json", _PLAN_FILE]]
        elif step == "apply":
            if not (workdir / _PLAN_FILE).exists():
                return False, f"no saved plan in {workdir}; plan again before applying"
            commands = [["apply", "-input=false", "-no-color", _PLAN_FILE], ["output", "-no-color", "-json"]]
        else:
            return False, f"unknown runbook step {step!r}"
        logger.info("runbook %s for incident %s (%s) in %s", step, incident.id, incident.kind, workdir)
        return self._run_commands(binary, workdir, commands)

    def _prepare(self, workdir: Path, source: Path, variables: dict) -> None:
        if not source.is_dir():
            raise OSError(f"runbook directory {str(source)!r} does not exist")
        shutil.copytree(source, workdir, ignore=_SKIP_COPY, dirs_exist_ok=True)
        (workdir / "pulsegate.auto.tfvars.json").write_text(json.dumps(variables, indent=2), encoding="utf-8")

    @staticmethod
    def _variables(runbook: dict, incident: Incident) -> dict:
        variables = dict(runbook.get("variables", {}))
        for key in runbook.get("detail_variables", []):
            if key in incident.details:
                variables[key] = incident.details[key]
        return variables

    def _run_commands(self, binary: str, workdir: Path, commands: list[list[str]]) -> tuple[bool, str]:
        env = dict(os.environ, TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1")
        transcript: list[str] = []
        for args in commands:
            try:
                done = subprocess.run(
                    [binary, *args], cwd=workdir, env=env, capture_output=True, text=True,
                    timeout=self.settings.timeout_s, check=False,
                )
            except subprocess.TimeoutExpired:
                transcript.append(f"$ {Path(binary).name} {args[0]}: timed out after {self.settings.timeout_s:g} s")
                return False, "\n".join(transcript)
            except OSError as exc:
                transcript.append(f"$ {Path(binary).name} {args[0]}: cannot run: {exc}")
                return False, "\n".join(transcript)
            body = _summarise_json(done.stdout) if "-json" in args else done.stdout
            transcript.append(f"$ {Path(binary).name} {args[0]} (exit {done.returncode})\n{body}{done.stderr}")
            if done.returncode != 0:
                return False, "\n".join(transcript)
        return True, "\n".join(transcript)


def _summarise_json(text: str) -> str:
    """Reduce ``show -json`` / ``output -json`` to the output values people care about."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    outputs = data.get("planned_values", {}).get("outputs", data) if isinstance(data, dict) else {}
    values = {name: spec.get("value") for name, spec in outputs.items() if isinstance(spec, dict)}
    return "outputs: " + json.dumps(values, sort_keys=True) + "\n"
