"""docs/operations.md and the compose file's notes: every `fablab` / `fablab-pi` command
and option they show exists in the command line apps."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from firmware_pi.cli import app as pi_app
from server.cli import app as server_app

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "docs" / "operations.md", REPO / "deploy" / "compose" / "compose.yaml",
        REPO / "README.md"]
APPS = {"fablab": typer.main.get_command(server_app), "fablab-pi": typer.main.get_command(pi_app)}
INLINE_CODE = re.compile(r"`([^`\n]+)`")


def _command_lines(text: str) -> list[str]:
    """Lines of code blocks, comment lines of YAML, and inline code spans."""
    lines, in_block = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            lines.append(line)
        else:
            lines += INLINE_CODE.findall(line)
            if line.startswith("#"):
                lines.append(line.lstrip("# "))
    return lines


def _invocations(path: Path) -> list[tuple[str, list[str]]]:
    """(program, arguments) of each fablab / fablab-pi command the file shows."""
    found = []
    for line in _command_lines(path.read_text()):
        try:
            words = shlex.split(line.replace("\\", " "), comments=True)
        except ValueError:
            continue
        for i, word in enumerate(words):
            program = word.rsplit("/", 1)[-1]
            starts_command = i == 0 or words[i - 1] in ("server",) or (
                i >= 3 and words[i - 3] == "sudo" and words[i - 2] == "-u")
            if program in APPS and starts_command:
                rest = [w for w in words[i + 1:] if w not in (">", "|")]
                found.append((program, rest))
    return found


def _resolve(program: str, args: list[str]) -> tuple[Any, list[str]]:
    command: Any = APPS[program]
    args = list(args)
    while hasattr(command, "commands"):  # a group (typer's own click types)
        while args and args[0].startswith("--"):  # the group's own options
            args = args[2:] if args[0] in ("--log-level", "--log-format") else args[1:]
        if not args or args[0] == "…":  # "`fablab …`": any command
            break
        name = args.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`{program}` has no sub-command {name!r}"
        command = sub
    return command, args


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_show_only_commands_and_options_that_exist(doc: Path) -> None:
    invocations = _invocations(doc)
    assert invocations or doc.name == "README.md"
    for program, args in invocations:
        command, rest = _resolve(program, args)
        known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        for word in rest:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"{program} … {command.name}: no {word}"


def test_docs_operations_cover_the_install_and_the_lifecycle() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    used = {args[0] for program, args in _invocations(REPO / "docs" / "operations.md")
            if program == "fablab" and args}
    assert {"db", "create-admin", "tls-ca", "tls-cert", "mosquitto-config", "add-machine",
            "controller-credentials", "revoke-controller"} <= used
    for section in ("PostgreSQL", "TLS", "HTTPS", "Backup and restore", "Upgrade",
                    "Add a machine", "Replace a controller", "Rotate keys"):
        assert section in text, section
    assert "pip install '.[" not in text  # the venv way only (Debian's Python is managed)
