"""docker-compose.yml read the way Compose reads it (YAML, then `${VAR}` interpolation from an env file), for tests
on a machine without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; `$$` is a literal dollar
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def read_env(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def variables(text: str) -> set[str]:
    """Every variable the text refers to (escaped `$${...}` excluded)."""
    return {m.group(1) for m in VARIABLE.finditer(text) if m.group(1)}


def interpolate(value, env: dict[str, str]):
    """Compose's interpolation over a parsed YAML tree; a missing `:?` variable raises KeyError like compose fails."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.groups()
        current = env.get(name)
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise KeyError(f"{name}: {arg}")
        if op == ":-" and not current:
            return arg
        if op == "-" and current is None:
            return arg
        return current or ""

    return VARIABLE.sub(one, value)


def load(env: dict[str, str] | None = None) -> dict:
    """The compose file, interpolated with `env` (default: .env.example, its empty secrets filled with placeholders)."""
    if env is None:
        secret = re.compile(r"PASSWORD|SECRET")
        env = {k: (v or f"test-{k.lower()}" if secret.search(k) else v) for k, v in read_env().items()}
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)


def mlflow_allowed_hosts(compose: dict) -> str:
    command = compose["services"]["mlflow"]["command"]
    return command[command.index("--allowed-hosts") + 1]
