"""Run a GitHub Actions job here, step by step, as the runner would: the test of a workflow
file is its own commands running.

What is emulated, and how:

- ``${{ }}`` expressions in ``env``, ``with`` and ``if`` (contexts ``inputs``, ``vars``,
  ``secrets``, ``env``, ``github``, ``runner``, ``steps``; operators ``!``, ``&&``, ``||``,
  ``==``, ``!=``, parentheses; the status functions), with GitHub's rules: ``||`` and ``&&``
  give an operand's value, ``''``, ``0``, ``false`` and ``null`` are falsy, strings compare
  without case, an ``if`` without a status function means ``success() && ...``;
- ``run`` steps: ``bash --noprofile --norc -eo pipefail`` (the workflow's ``shell: bash``)
  in the workspace, with the workflow's, job's and step's ``env`` and the runner's variables
  (``GITHUB_ENV``, ``GITHUB_OUTPUT``, ``RUNNER_TEMP``, ...); what a step appends to
  ``GITHUB_ENV`` and ``GITHUB_OUTPUT`` reaches the later steps;
- the actions the example uses: ``actions/checkout`` and ``actions/setup-python`` (the
  workspace and the interpreter are already there), ``actions/cache`` (a dict as the cache
  service: restored before, saved after a successful job on a miss) and
  ``actions/upload-artifact`` (copied into a folder a name). Any other action fails the run,
  so a new one in the workflow is noticed here first.

Nothing else of GitHub's is emulated: no matrix, no ``needs``, no containers, no
``working-directory``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>&&|\|\||==|!=|!|\(|\)|,)"
    r"|(?P<number>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*))"
)
_STATUS_FUNCTIONS = ("success()", "failure()", "always()", "cancelled()")
_EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "")


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b):
        return a == b
    return _number(a) == _number(b)


class Expression:
    """One ``${{ }}`` expression, evaluated against ``contexts`` and ``functions``."""

    def __init__(self, text: str, contexts: dict[str, Any], functions: dict[str, Any]):
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.strip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise ValueError(f"cannot read the expression {text!r} at {text[position:]!r}")
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.position = 0
        self.contexts, self.functions, self.text = contexts, functions, text

    def value(self) -> Any:
        result = self._or()
        if self.position != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.position]} in {self.text!r}")
        return result

    def _peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self._take()
            other = self._and()
            value = value if truthy(value) else other
        return value

    def _and(self) -> Any:
        value = self._compare()
        while self._peek() == "&&":
            self._take()
            other = self._compare()
            value = other if truthy(value) else value
        return value

    def _compare(self) -> Any:
        value = self._unary()
        if self._peek() in ("==", "!="):
            op = self._take()[1]
            equal = _equal(value, self._unary())
            return equal if op == "==" else not equal
        return value

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._primary()

    def _primary(self) -> Any:
        kind, text = self._take()
        if text == "(":
            value = self._or()
            assert self._take()[1] == ")", self.text
            return value
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "number":
            return float(text)
        if kind != "name":
            raise ValueError(f"unexpected {text!r} in {self.text!r}")
        literals = {"true": True, "false": False, "null": None}
        if text in literals:
            return literals[text]
        if self._peek() == "(":
            self._take()
            args = []
            while self._peek() != ")":
                args.append(self._or())
                if self._peek() == ",":
                    self._take()
            self._take()
            if text not in self.functions:
                raise ValueError(f"the function {text}() is not emulated ({self.text!r})")
            return self.functions[text](*args)
        first, *path = text.split(".")
        if first not in self.contexts:
            raise ValueError(f"unknown context {first!r} in {self.text!r}")
        value = self.contexts[first]
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value


@dataclass
class StepRun:
    name: str
    outcome: str  # success, failure or skipped
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""


@dataclass
class JobRun:
    steps: list[StepRun]
    succeeded: bool
    env: dict[str, str]
    artifacts: dict[str, Path] = field(default_factory=dict)

    def step(self, name: str) -> StepRun:
        found = [s for s in self.steps if s.name == name]
        assert len(found) == 1, (name, [s.name for s in self.steps])
        return found[0]

    @property
    def log(self) -> str:
        return "\n".join(
            f"--- {s.name}: {s.outcome} ({s.returncode})\n{s.stdout}{s.stderr}" for s in self.steps
        )


def step_name(step: dict[str, Any]) -> str:
    return step.get("name") or step.get("uses") or step["run"].splitlines()[0]


def load_workflow(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as true.
    if True in data:
        data["on"] = data.pop(True)
    return data


class JobRunner:
    """Runs one job of a workflow in ``workspace`` (the checked-out repository).

    Args:
        workflow: the parsed workflow (:func:`load_workflow`).
        workspace: the folder that plays the checkout.
        runner_temp: an empty folder for ``RUNNER_TEMP`` and the runner's files.
        path: the ``PATH`` of the steps.
        cache: the cache service's store (key -> folder), shared between runs.
        artifacts: where uploaded artifacts go, a folder a name.
    """

    def __init__(
        self,
        workflow: dict[str, Any],
        workspace: Path,
        runner_temp: Path,
        *,
        path: str,
        cache: dict[str, Path],
        artifacts: Path,
        extra_env: dict[str, str] | None = None,
    ):
        self.workflow, self.workspace, self.temp = workflow, workspace, runner_temp
        self.path, self.cache, self.artifact_root = path, cache, artifacts
        self.extra_env = extra_env or {}

    def run(
        self,
        job: str,
        *,
        event: str,
        inputs: dict[str, Any] | None = None,
        variables: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
        only: tuple[str, ...] | None = None,
    ) -> JobRun:
        """Run ``job`` for ``event``; ``only`` runs just the steps of those names."""
        self.temp.mkdir(parents=True, exist_ok=True)
        sha = "0123456789abcdef0123456789abcdef01234567"
        contexts: dict[str, Any] = {
            "inputs": dict(inputs or {}),
            "vars": dict(variables or {}),
            "secrets": dict(secrets or {}),
            "github": {"event_name": event, "sha": sha, "workspace": str(self.workspace)},
            "runner": {"temp": str(self.temp), "os": "Linux"},
            "steps": {},
            "env": {},
        }
        state = {"failed": False}
        functions = {
            "success": lambda: not state["failed"],
            "failure": lambda: state["failed"],
            "always": lambda: True,
            "cancelled": lambda: False,
        }
        env = self._evaluate_env(self.workflow.get("env", {}), contexts, functions)
        job_spec = self.workflow["jobs"][job]
        env.update(self._evaluate_env(job_spec.get("env", {}), {**contexts, "env": env}, functions))
        runner_env = {
            "PATH": self.path,
            "HOME": os.environ.get("HOME", str(self.temp)),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_SHA": sha,
            "GITHUB_EVENT_NAME": event,
            "RUNNER_TEMP": str(self.temp),
            "RUNNER_OS": "Linux",
            **self.extra_env,
        }
        github_env = self.temp / "github_env"
        github_env.write_text("")
        saves: list[tuple[str, Path]] = []
        artifacts: dict[str, Path] = {}
        runs: list[StepRun] = []
        for index, step in enumerate(job_spec["steps"]):
            name = step_name(step)
            if only is not None and name not in only:
                continue
            env_now = {**env, **_read_assignments(github_env)}
            scope = {**contexts, "env": env_now}
            condition = step.get("if", "success()")
            if not self._condition(condition, scope, functions):
                runs.append(StepRun(name, "skipped"))
                _record(contexts, step, "skipped", {})
                continue
            step_env = {**env_now, **self._evaluate_env(step.get("env", {}), scope, functions)}
            if "run" in step:
                result, outputs = self._run_script(index, step, runner_env, step_env, github_env)
            else:
                result, outputs = self._use_action(step, scope, functions, saves, artifacts)
            runs.append(result)
            _record(contexts, step, result.outcome, outputs)
            if result.outcome == "failure":
                state["failed"] = True
        succeeded = not state["failed"]
        if succeeded:  # actions/cache saves in its post step, after a successful job
            for key, folder in saves:
                if folder.exists() and key not in self.cache:
                    stored = Path(tempfile.mkdtemp(prefix="cache-", dir=self.temp.parent)) / "c"
                    shutil.copytree(folder, stored)
                    self.cache[key] = stored
        return JobRun(runs, succeeded, {**env, **_read_assignments(github_env)}, artifacts)

    # ------------------------------------------------------------------------- pieces

    def _evaluate_env(self, spec, contexts, functions) -> dict[str, str]:
        return {name: self.interpolate(str(v), contexts, functions) for name, v in spec.items()}

    @staticmethod
    def interpolate(text: str, contexts, functions) -> str:
        return _EXPRESSION.sub(
            lambda m: as_text(Expression(m.group(1), contexts, functions).value()), text
        )

    @staticmethod
    def _condition(condition: Any, contexts, functions) -> bool:
        if isinstance(condition, bool):
            return condition
        text = str(condition).strip()
        match = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.DOTALL)
        if match:
            text = match.group(1).strip()
        value = truthy(Expression(text, contexts, functions).value())
        if not any(f in text.replace(" ", "") for f in _STATUS_FUNCTIONS):
            value = value and functions["success"]()
        return value

    def _run_script(self, index, step, runner_env, step_env, github_env):
        script = self.temp / f"step-{index}.sh"
        script.write_text(step["run"])
        output_file = self.temp / f"output-{index}"
        output_file.write_text("")
        env = {
            **step_env,
            **runner_env,
            "GITHUB_ENV": str(github_env),
            "GITHUB_OUTPUT": str(output_file),
            "GITHUB_STEP_SUMMARY": str(self.temp / "summary.md"),
        }
        assert step.get("shell", self.workflow.get("defaults", {}).get("run", {}).get("shell")) == (
            "bash"
        ), "the steps are run as bash with pipefail, as `shell: bash` runs them"
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        outcome = "success" if proc.returncode == 0 else "failure"
        result = StepRun(step_name(step), outcome, proc.returncode, proc.stdout, proc.stderr)
        return result, _read_assignments(output_file)

    def _use_action(self, step, scope, functions, saves, artifacts):
        action = step["uses"]
        name = step_name(step)
        options = {
            k: self.interpolate(str(v), scope, functions) for k, v in step.get("with", {}).items()
        }
        outputs: dict[str, str] = {}
        if action.startswith(("actions/checkout@", "actions/setup-python@")):
            return StepRun(name, "success"), outputs
        if action.startswith("actions/cache@"):
            key, folder = options["key"], self.workspace / options["path"]
            if key in self.cache:
                shutil.copytree(self.cache[key], folder, dirs_exist_ok=True)
                outputs["cache-hit"] = "true"
            else:
                saves.append((key, folder))
                outputs["cache-hit"] = ""
            return StepRun(name, "success"), outputs
        if action.startswith("actions/upload-artifact@"):
            target = self.artifact_root / options["name"]
            found = [
                self.workspace / line.strip()
                for line in options["path"].splitlines()
                if line.strip() and (self.workspace / line.strip()).is_file()
            ]
            if not found and options.get("if-no-files-found", "warn") == "error":
                return StepRun(name, "failure", 1, "", "no files found"), outputs
            for file in found:
                relative = file.relative_to(self.workspace)
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target / relative)
            if found:
                artifacts[options["name"]] = target
            return StepRun(name, "success"), outputs
        raise AssertionError(f"the action {action} is not emulated: teach workflow_runner.py")


def _record(contexts, step, outcome: str, outputs: dict[str, str]) -> None:
    if "id" in step:
        contexts["steps"][step["id"]] = {
            "outcome": outcome,
            "conclusion": outcome,
            "outputs": outputs,
        }


def _read_assignments(path: Path) -> dict[str, str]:
    """``NAME=value`` lines and ``NAME<<DELIMITER`` blocks, as GITHUB_ENV and GITHUB_OUTPUT
    hold them."""
    values: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    index = 0
    while index < len(lines):
        line = lines[index]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, index + 1)
            values[name] = "\n".join(lines[index + 1 : end])
            index = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        index += 1
    return values
