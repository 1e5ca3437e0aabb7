#!/usr/bin/env python3
"""Static checks of the Docker deliverables of auth-jit (no Docker engine needed).

    python check_docker.py --repo /work/main --settings-file FILE
    python check_docker.py --repo /work/main --settings-file FILE --self-test

FILE holds the output of `auth-jit settings`: one `AUTH_JIT_NAME=value` line
per setting, so the valid variable names come from the real binary.

Checked files (paths relative to the repository root, which is also the
compose project directory: `docker-compose -f docker/... --project-directory .`):
docker/Dockerfile, docker/docker-compose.yml and its overlays
docker/docker-compose.dev.yml and docker/docker-compose.otlp.yml,
docker/otel-collector.yaml, .env.example and .dockerignore.

Besides the wiring (stages, ports, volumes, healthchecks, OTLP), it knows
one rule of the server: a service whose AUTH_JIT_STORE_URL is redis:// or
rediss:// must set AUTH_JIT_KEY_ENCRYPTION_KEY as a required interpolation
`${VAR:?message}` (never a literal or a default: a key in a committed file
is a leaked secret) or AUTH_JIT_KEY_ENCRYPTION_KEY_FILE naming a file that a
secret or volume of the service provides; without it the server refuses to
start, because the signing key ring in Redis is encrypted with that key.

Prints one line per check, `ok: ...` or `FAIL: ...`, and exits 1 if any
check failed (2 on a usage error). `--self-test` runs every check on
deliberately broken copies of those files in a temporary directory and
exits 0 only if the intact copy passes, every broken copy is caught by
the check meant to catch it, and a few other correct ways of writing the
files (VARIANTS) still pass.

Needs PyYAML (tested with PyYAML==6.0.3).
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from urllib.parse import urlsplit

try:
    import yaml
except ImportError:  # pragma: no cover - reported, not raised
    sys.stderr.write("check_docker.py needs PyYAML: pip install PyYAML==6.0.3\n")
    sys.exit(2)

# --------------------------------------------------------------------------
# What the project looks like.

DOCKERFILE = "docker/Dockerfile"
COMPOSE_BASE = "docker/docker-compose.yml"
COMPOSE_DEV = "docker/docker-compose.dev.yml"
COMPOSE_OTLP = "docker/docker-compose.otlp.yml"
COLLECTOR_CONFIG = "docker/otel-collector.yaml"
ENV_EXAMPLE = ".env.example"
DOCKERIGNORE = ".dockerignore"
CLI_SOURCE = "src/cli.rs"

# The compose combinations people run (base first, overlays in order).
COMBINATIONS = [
    ("compose", [COMPOSE_BASE]),
    ("compose+dev", [COMPOSE_BASE, COMPOSE_DEV]),
    ("compose+otlp", [COMPOSE_BASE, COMPOSE_OTLP]),
    ("compose+dev+otlp", [COMPOSE_BASE, COMPOSE_DEV, COMPOSE_OTLP]),
]

APP_SERVICE = "auth-jit"
BINARY = "auth-jit"
APP_PORT = "8000"
JAEGER_UI_PORT = "16686"
# Valid `auth-jit` subcommands, with their own subcommands where they have some.
SUBCOMMANDS: dict[str, set[str]] = {
    "serve": set(),
    "healthcheck": set(),
    "settings": set(),
    "client": {"add", "list", "remove", "revoke-tokens"},
    "keys": {"list"},
}
GLOBAL_OPTIONS_WITH_VALUE = {"--config"}
# Names that are valid without being settings.
EXTRA_VARIABLES = {"AUTH_JIT_CONFIG"}
VAR_RE = re.compile(r"\bAUTH_JIT_[A-Z0-9_]*[A-Z0-9]")
SETTING_LINE_RE = re.compile(r"^(AUTH_JIT_[A-Z0-9_]+)=")
WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}
# The distroless nonroot user.
KNOWN_UIDS = {"nonroot": "65532", "root": "0"}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# What .dockerignore must keep out of the build context.
MUST_IGNORE = ["target", ".git", ".env", "data"]
# With a Redis store the signing key ring lives in Redis, encrypted with the
# key-encryption key: the server refuses to start without one of these.
STORE_VAR = "AUTH_JIT_STORE_URL"
REDIS_SCHEMES = ("redis", "rediss")
KEK_VAR = "AUTH_JIT_KEY_ENCRYPTION_KEY"
KEK_FILE_VAR = "AUTH_JIT_KEY_ENCRYPTION_KEY_FILE"
SECRETS_DIR = "/run/secrets"


class Report:
    """Collects `ok:` / `FAIL:` lines."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []

    def ok(self, message: str) -> None:
        self.passed += 1
        print(f"ok: {message}", file=self.out)

    def fail(self, message: str) -> None:
        self.failed += 1
        self.failures.append(message)
        print(f"FAIL: {message}", file=self.out)

    def check(self, condition: bool, ok_message: str, fail_message: str) -> bool:
        if condition:
            self.ok(ok_message)
        else:
            self.fail(fail_message)
        return bool(condition)

    def note(self, message: str) -> None:
        print(f"note: {message}", file=self.out)


# --------------------------------------------------------------------------
# YAML: strict about duplicate keys (compose rejects them, PyYAML does not).


class StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(repo: str, rel: str, report: Report):
    path = os.path.join(repo, rel)
    if not os.path.isfile(path):
        report.fail(f"{rel}: file missing")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=StrictLoader)
    except yaml.YAMLError as e:
        report.fail(f"{rel}: invalid YAML: {' '.join(str(e).split())}")
        return None
    if not isinstance(data, dict):
        report.fail(f"{rel}: top level is not a mapping")
        return None
    report.ok(f"{rel}: valid YAML")
    return data


def read_text(repo: str, rel: str) -> str | None:
    path = os.path.join(repo, rel)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


# --------------------------------------------------------------------------
# Dockerfile parsing.


class Stage:
    def __init__(self, index: int, image: str, name: str | None, line: int):
        self.index = index
        self.image = image
        self.name = name
        self.line = line
        self.parent: Stage | None = None
        self.instructions: list[tuple[int, str, str]] = []

    @property
    def label(self) -> str:
        return self.name or f"#{self.index}"

    def all(self, instr: str) -> list[tuple[int, str]]:
        return [(ln, args) for ln, i, args in self.instructions if i == instr]

    def last(self, instr: str) -> tuple[int, str] | None:
        found = self.all(instr)
        return found[-1] if found else None

    def inherited_last(self, instr: str) -> tuple[int, str] | None:
        stage: Stage | None = self
        while stage is not None:
            found = stage.last(instr)
            if found:
                return found
            stage = stage.parent
        return None

    def env(self) -> dict[str, str]:
        chain = []
        stage: Stage | None = self
        while stage is not None:
            chain.append(stage)
            stage = stage.parent
        env: dict[str, str] = {}
        for stage in reversed(chain):
            for _, args in stage.all("ENV"):
                env.update(parse_env_instruction(args))
        return env

    def exposed(self) -> set[str]:
        ports = set()
        stage: Stage | None = self
        while stage is not None:
            for _, args in stage.all("EXPOSE"):
                for token in args.split():
                    ports.add(token.split("/")[0])
            stage = stage.parent
        return ports


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Joins continuation lines; drops comments, blank lines and directives."""
    out = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = number
        if raw.rstrip().endswith("\\"):
            buf.append(raw.rstrip()[:-1])
            continue
        buf.append(raw)
        out.append((start, " ".join(part.strip() for part in buf if part.strip())))
        buf = []
    if buf:
        out.append((start, " ".join(part.strip() for part in buf if part.strip())))
    return out


def parse_dockerfile(text: str) -> tuple[list[Stage], list[str]]:
    stages: list[Stage] = []
    errors = []
    for line, content in logical_lines(text):
        instr, _, args = content.partition(" ")
        instr = instr.upper()
        args = args.strip()
        if instr == "FROM":
            tokens = [t for t in args.split() if not t.startswith("--")]
            if not tokens:
                errors.append(f"line {line}: FROM without an image")
                continue
            name = tokens[2] if len(tokens) >= 3 and tokens[1].lower() == "as" else None
            stage = Stage(len(stages), tokens[0], name, line)
            for earlier in stages:
                if earlier.name and earlier.name.lower() == tokens[0].lower():
                    stage.parent = earlier
            stages.append(stage)
        elif not stages:
            if instr != "ARG":
                errors.append(f"line {line}: {instr} before the first FROM")
        else:
            stages[-1].instructions.append((line, instr, args))
    return stages, errors


def parse_env_instruction(args: str) -> dict[str, str]:
    try:
        tokens = shlex.split(args)
    except ValueError:
        return {}
    if not tokens:
        return {}
    if "=" not in tokens[0]:  # legacy `ENV KEY value with spaces`
        return {tokens[0]: " ".join(tokens[1:])}
    env = {}
    for token in tokens:
        key, _, value = token.partition("=")
        env[key] = value
    return env


def exec_form(args: str) -> list[str] | None:
    """The argv of an exec-form (JSON array) instruction, else None."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def command_argv(args: str) -> list[str]:
    """Exec form as is; shell form as `/bin/sh -c ...`."""
    argv = exec_form(args)
    return argv if argv is not None else ["/bin/sh", "-c", args]


def parse_healthcheck(args: str) -> tuple[str, list[str] | None, bool]:
    """(kind, argv, exec_form) where kind is CMD, NONE or '' (unparsable)."""
    m = re.match(r"^((?:--\S+\s+)*)(CMD|NONE)\b\s*(.*)$", args, re.IGNORECASE | re.DOTALL)
    if not m:
        return "", None, False
    kind = m.group(2).upper()
    if kind == "NONE":
        return kind, None, False
    rest = m.group(3).strip()
    argv = exec_form(rest)
    return kind, argv if argv is not None else ["/bin/sh", "-c", rest], argv is not None


def parse_copy(args: str) -> tuple[dict[str, str], list[str]]:
    tokens = args.split()
    flags = {}
    rest = []
    for i, token in enumerate(tokens):
        if token.startswith("--"):
            key, _, value = token[2:].partition("=")
            flags[key] = value
        else:
            rest = tokens[i:]
            break
    joined = " ".join(rest)
    paths = exec_form(joined) if joined.startswith("[") else rest
    return flags, paths or []


def image_pin_problem(image: str) -> str | None:
    if "$" in image:
        return "uses a build argument, cannot be verified as pinned"
    if image == "scratch":
        return None
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag (means :latest)"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest":
        return "uses :latest"
    return None


# --------------------------------------------------------------------------
# auth-jit invocations inside commands.


def find_invocations(argv: list[str]) -> list[list[str]]:
    """The argument lists given to auth-jit in `argv`, in every form we use:
    the binary itself, `sh -c "..."`, `cargo run ... -- ARGS` and
    `cargo watch -x 'run -- ARGS'`."""
    found = []
    if not argv:
        return found
    if os.path.basename(argv[0]) in ("sh", "bash") and "-c" in argv:
        index = argv.index("-c")
        if index + 1 < len(argv):
            try:
                inner = shlex.split(argv[index + 1])
            except ValueError:
                inner = []
            # Several commands joined by && or ;.
            part: list[str] = []
            for token in inner + [";"]:
                if token in ("&&", "||", ";", "|"):
                    found.extend(find_invocations(part))
                    part = []
                else:
                    part.append(token)
        return found
    if os.path.basename(argv[0]) == BINARY:
        found.append(argv[1:])
        return found
    if os.path.basename(argv[0]) == "cargo":
        if len(argv) > 1 and argv[1] == "run":
            if "--" in argv:
                found.append(argv[argv.index("--") + 1 :])
            else:
                found.append([])
        elif len(argv) > 1 and argv[1] == "watch":
            for i, token in enumerate(argv):
                value = None
                if token in ("-x", "--exec") and i + 1 < len(argv):
                    value = argv[i + 1]
                elif token.startswith("--exec="):
                    value = token.split("=", 1)[1]
                if value is not None:
                    try:
                        found.extend(find_invocations(["cargo"] + shlex.split(value)))
                    except ValueError:
                        found.append(["<unparsable>"])
    return found


def subcommand_problem(args: list[str]) -> tuple[str | None, list[str]]:
    """(problem or None, the subcommand words) of `auth-jit ARGS`."""
    words = []
    skip = False
    for token in args:
        if skip:
            skip = False
            continue
        if token in GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
            continue
        if token.startswith("-"):
            continue
        words.append(token)
    if not words:
        return None, ["serve"]  # no subcommand: serve
    first = words[0]
    if first not in SUBCOMMANDS:
        return f"unknown subcommand {first!r} (known: {', '.join(sorted(SUBCOMMANDS))})", words
    nested = SUBCOMMANDS[first]
    if nested:
        if len(words) < 2 or words[1] not in nested:
            given = words[1] if len(words) > 1 else "nothing"
            return f"{first} needs one of {', '.join(sorted(nested))}, got {given!r}", words
    return None, words


def cli_subcommands(repo: str) -> set[str] | None:
    """Subcommands of `enum Command` in src/cli.rs, kebab-cased as clap does."""
    text = read_text(repo, CLI_SOURCE)
    if text is None:
        return None
    m = re.search(r"pub enum Command\s*\{(.*?)\n\}", text, re.DOTALL)
    if not m:
        return None
    names = set()
    pending_name = None
    for line in m.group(1).splitlines():
        line = line.strip()
        rename = re.search(r'#\[command\(.*\bname\s*=\s*"([^"]+)"', line)
        if rename:
            pending_name = rename.group(1)
            continue
        if line.startswith("#") or line.startswith("//") or not line:
            continue
        variant = re.match(r"([A-Z][A-Za-z0-9]*)\b", line)
        if variant:
            kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", variant.group(1)).lower()
            names.add(pending_name or kebab)
            pending_name = None
    return names


# --------------------------------------------------------------------------
# Compose model: normalising and merging overlays as `docker compose` does.


def norm_environment(value) -> dict[str, str | None]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    env = {}
    for item in value:
        key, sep, val = str(item).partition("=")
        env[key] = val if sep else None
    return env


def norm_depends(value) -> dict[str, dict]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(name): {"condition": "service_started"} for name in value}
    return {str(k): (v or {"condition": "service_started"}) for k, v in value.items()}


def norm_build(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"context": value}
    return dict(value)


def parse_volume(entry) -> dict:
    """{type, source, target} of a short- or long-syntax service volume."""
    if isinstance(entry, dict):
        return {
            "type": entry.get("type", "volume"),
            "source": entry.get("source"),
            "target": entry.get("target"),
        }
    parts = str(entry).split(":")
    if len(parts) == 1:
        return {"type": "volume", "source": None, "target": parts[0]}
    source, target = parts[0], parts[1]
    kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
    return {"type": kind, "source": source, "target": target}


def merge_volumes(base: list, over: list) -> list:
    merged = {}
    for entry in list(base or []) + list(over or []):
        merged[parse_volume(entry)["target"]] = entry
    return list(merged.values())


def merge_service(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if key in ("environment", "labels"):
            out[key] = {**norm_environment(base.get(key)), **norm_environment(value)}
        elif key == "depends_on":
            out[key] = {**norm_depends(base.get(key)), **norm_depends(value)}
        elif key == "build":
            out[key] = {**norm_build(base.get(key)), **norm_build(value)}
        elif key in ("healthcheck", "deploy", "logging") and isinstance(value, dict):
            out[key] = {**(base.get(key) or {}), **value}
        elif key == "volumes":
            out[key] = merge_volumes(base.get(key), value)
        elif key in ("ports", "expose", "env_file", "dns", "cap_add", "cap_drop"):
            base_list = base.get(key) or []
            base_list = base_list if isinstance(base_list, list) else [base_list]
            over_list = value if isinstance(value, list) else [value]
            out[key] = base_list + [v for v in over_list if v not in base_list]
        else:
            out[key] = value
    return out


def merge_compose(docs: list[dict]) -> dict:
    merged: dict = {"services": {}}
    for doc in docs:
        for key, value in doc.items():
            if key == "services":
                for name, service in (value or {}).items():
                    service = service or {}
                    merged["services"][name] = merge_service(
                        merged["services"].get(name, {}), service
                    )
            elif key in ("volumes", "networks", "configs", "secrets"):
                merged.setdefault(key, {})
                merged[key] = {**(merged[key] or {}), **(value or {})}
            else:
                merged[key] = value
    return merged


INTERPOLATION_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def resolve(value) -> str | None:
    """A compose value as it is with no variable set in the shell or .env:
    `${X:-default}` gives the default, `${X}` gives ''."""
    if value is None:
        return None
    text = str(value).replace("$$", "\0")

    def sub(m):
        if m.group(2) in (":-", "-"):
            return m.group(3)
        return ""

    return INTERPOLATION_RE.sub(sub, text).replace("\0", "$")


REQUIRED_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")


def secret_value_problem(name: str, value: str | None) -> str | None:
    """Why a compose value for a secret setting is wrong, or None when it is
    one required interpolation `${VAR:?message}`: then compose stops when VAR
    is unset or empty, and the value itself is never in a committed file."""
    fix = f"use {name}: ${{{name}:?message}} and put the value in .env or the shell"
    if value is None:
        return f"{name} is passed through without a value: compose does not stop when it is unset ({fix})"
    text = str(value).strip()
    if REQUIRED_RE.match(text):
        return None
    if not text:
        return f"{name} is empty ({fix})"
    found = list(INTERPOLATION_RE.finditer(text.replace("$$", "\0\0")))
    if not found:
        return f"{name} is a literal value: a key written in a committed file is a leaked secret ({fix})"
    if len(found) > 1 or found[0].span() != (0, len(text)):
        return f"{name}={text!r} is not a single ${{VAR:?message}} interpolation (partly literal) ({fix})"
    operator = found[0].group(2)
    if operator in (":-", "-"):
        return f"{name} has a default (`{operator}`): the default is a key in a committed file (a leaked secret) and compose does not stop when the variable is unset ({fix})"
    if operator == "?":
        return f"{name} uses `?`, which accepts an empty value: compose does not stop and the server refuses to start (`:?` rejects both) ({fix})"
    return f"{name}={text!r} is not required: unset, compose substitutes an empty string and the server refuses to start ({fix})"


def secret_mounts(service: dict) -> dict[str, str]:
    """{path in the container: secret name} of a service's `secrets`."""
    out = {}
    for entry in service.get("secrets") or []:
        if isinstance(entry, dict):
            source = str(entry.get("source") or "")
            target = str(entry.get("target") or source)
        else:
            source = target = str(entry)
        if not source:
            continue
        path = target if target.startswith("/") else f"{SECRETS_DIR}/{target}"
        out[os.path.normpath(path)] = source
    return out


def parse_ports(entries) -> list[tuple[str | None, str, object]]:
    """(published, target, raw) of each `ports` entry."""
    out = []
    for entry in entries or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            out.append((None if published is None else str(published), str(entry.get("target")), entry))
            continue
        if not isinstance(entry, str):
            out.append((None, "", entry))
            continue
        spec = entry.split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            out.append((None, parts[0], entry))
        else:
            out.append((parts[-2] or None, parts[-1], entry))
    return out


def env_file_entries(value) -> list[tuple[str, bool]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append((str(item.get("path")), bool(item.get("required", True))))
        else:
            out.append((str(item), True))
    return out


def healthcheck_argv(test) -> tuple[str, list[str]]:
    """(kind, argv) of a compose healthcheck test."""
    if test is None:
        return "", []
    if isinstance(test, str):
        return "CMD-SHELL", ["/bin/sh", "-c", test]
    if not test:
        return "", []
    kind = str(test[0]).upper()
    if kind == "CMD":
        return kind, [str(t) for t in test[1:]]
    if kind == "CMD-SHELL":
        return kind, ["/bin/sh", "-c", " ".join(str(t) for t in test[1:])]
    return kind, []


def as_argv(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError:
        return [str(value)]


def split_host_port(endpoint: str) -> tuple[str, str]:
    endpoint = endpoint.strip()
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        return parts.hostname or "", str(parts.port) if parts.port else ""
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), port


# --------------------------------------------------------------------------
# .dockerignore


def dockerignore_patterns(text: str) -> list[tuple[bool, str]]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = os.path.normpath(pattern.strip("/")).replace(os.sep, "/")
        patterns.append((negate, pattern))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    path = os.path.normpath(path).replace(os.sep, "/")
    prefixes = []
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefixes.append("/".join(parts[:i]))
    result = False
    for negate, pattern in patterns:
        variants = {pattern}
        if pattern.startswith("**/"):
            variants.add(pattern[3:])
        if any(fnmatch.fnmatchcase(p, v) for p in prefixes for v in variants):
            result = not negate
    return result


# --------------------------------------------------------------------------
# The checks.


class Checker:
    def __init__(self, repo: str, settings: set[str], report: Report):
        self.repo = repo
        self.settings = settings
        self.report = report
        self.stages: list[Stage] = []
        self.used_subcommands: set[str] = set()

    # -- helpers
    def exists(self, rel: str) -> bool:
        return os.path.exists(os.path.join(self.repo, rel))

    def stage(self, name: str | None) -> Stage | None:
        if name is None:
            return self.stages[-1] if self.stages else None
        for stage in self.stages:
            if stage.name and stage.name.lower() == str(name).lower():
                return stage
        return None

    def check_invocations(self, where: str, argv: list[str], require: bool = False) -> None:
        r = self.report
        invocations = find_invocations(argv)
        if require and not invocations:
            r.fail(f"{where}: does not run {BINARY}: {argv}")
            return
        for args in invocations:
            problem, words = subcommand_problem(args)
            if problem:
                r.fail(f"{where}: `{BINARY} {' '.join(args)}`: {problem}")
            else:
                self.used_subcommands.add(words[0])
                r.ok(f"{where}: `{BINARY} {' '.join(words)}` is a real subcommand")

    def check_names(self, rel: str, text: str) -> None:
        names = sorted(set(VAR_RE.findall(text)))
        unknown = [n for n in names if n not in self.settings and n not in EXTRA_VARIABLES]
        self.report.check(
            not unknown,
            f"{rel}: all {len(names)} AUTH_JIT_* names are real settings",
            f"{rel}: unknown AUTH_JIT_* variable(s) {', '.join(unknown)} (not printed by `auth-jit settings`)",
        )

    # -- settings file
    def check_settings(self) -> None:
        r = self.report
        needed = {"AUTH_JIT_HOST", "AUTH_JIT_PORT", "AUTH_JIT_DATA_DIR"}
        missing = sorted(needed - self.settings)
        r.check(
            len(self.settings) > 0 and not missing,
            f"settings file lists {len(self.settings)} settings",
            f"settings file lists {len(self.settings)} settings, missing {', '.join(missing) or 'all'}",
        )

    # -- Dockerfile
    def check_dockerfile(self) -> None:
        r = self.report
        text = read_text(self.repo, DOCKERFILE)
        if text is None:
            r.fail(f"{DOCKERFILE}: file missing")
            return
        self.check_names(DOCKERFILE, text)
        stages, errors = parse_dockerfile(text)
        self.stages = stages
        for error in errors:
            r.fail(f"{DOCKERFILE}: {error}")
        r.check(
            len(stages) >= 2,
            f"{DOCKERFILE}: multi-stage ({len(stages)} FROM stages: {', '.join(s.label for s in stages)})",
            f"{DOCKERFILE}: needs at least 2 FROM stages, has {len(stages)}",
        )
        names = [s.name.lower() for s in stages if s.name]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        r.check(not duplicates, f"{DOCKERFILE}: stage names are unique",
                f"{DOCKERFILE}: duplicate stage name(s) {', '.join(duplicates)}")
        for stage in stages:
            if stage.parent is not None:
                continue
            problem = image_pin_problem(stage.image)
            r.check(
                problem is None,
                f"{DOCKERFILE}: stage {stage.label} FROM {stage.image} is pinned",
                f"{DOCKERFILE}: stage {stage.label} FROM {stage.image} {problem}",
            )
        # COPY --from references.
        for stage in stages:
            earlier = {s.name.lower() for s in stages[: stage.index] if s.name}
            for line, args in stage.all("COPY") + stage.all("ADD"):
                flags, _ = parse_copy(args)
                ref = flags.get("from")
                if ref is None:
                    continue
                known = ref.lower() in earlier or (ref.isdigit() and int(ref) < stage.index)
                r.check(
                    known,
                    f"{DOCKERFILE}:{line}: COPY --from={ref} is an earlier stage",
                    f"{DOCKERFILE}:{line}: COPY --from={ref} is not a stage defined before it",
                )
        self.check_copy_sources(stages)
        self.check_build_inputs(stages)
        builds = [args for s in stages for _, args in s.all("RUN") if "cargo build" in args]
        r.check(
            any("--release" in a and "--locked" in a for a in builds),
            f"{DOCKERFILE}: builds with `cargo build --release --locked`",
            f"{DOCKERFILE}: no `cargo build --release --locked` step",
        )
        if stages:
            self.check_final_stage(stages[-1])
        for stage in stages[:-1]:
            cmd = stage.last("CMD")
            if cmd:
                self.check_invocations(f"{DOCKERFILE}: stage {stage.label} CMD", command_argv(cmd[1]))

    def check_copy_sources(self, stages: list[Stage]) -> None:
        r = self.report
        text = read_text(self.repo, DOCKERIGNORE) or ""
        patterns = dockerignore_patterns(text)
        for stage in stages:
            for line, args in stage.all("COPY") + stage.all("ADD"):
                flags, paths = parse_copy(args)
                if "from" in flags or len(paths) < 2:
                    continue
                for source in paths[:-1]:
                    rel = os.path.normpath(source).replace(os.sep, "/")
                    if rel.startswith("..") or "$" in rel or re.search(r"^[a-z]+://", source):
                        continue
                    present = self.exists(rel)
                    excluded = ignored(rel, patterns)
                    r.check(
                        present and not excluded,
                        f"{DOCKERFILE}:{line}: COPY source {source} is in the build context",
                        f"{DOCKERFILE}:{line}: COPY source {source} "
                        + ("is excluded by .dockerignore" if present else "does not exist in the repository"),
                    )

    def check_build_inputs(self, stages: list[Stage]) -> None:
        """Everything Cargo.toml names (workspace members, path dependencies,
        declared target files) is copied into the stage that builds the
        release binary: cargo reads the whole manifest, and a missing member
        or bench file fails the build before it starts."""
        r = self.report
        text = read_text(self.repo, "Cargo.toml")
        if text is None:
            return
        try:
            import tomllib
            manifest = tomllib.loads(text)
        except Exception as e:  # an unreadable manifest fails the build too
            r.fail(f"Cargo.toml: not readable as TOML: {e}")
            return
        needed: set[str] = set()
        for member in manifest.get("workspace", {}).get("members", []):
            if os.path.normpath(member) != ".":
                needed.add(os.path.normpath(member))
        for table in ("dependencies", "build-dependencies"):
            for dep in manifest.get(table, {}).values():
                if isinstance(dep, dict) and "path" in dep:
                    needed.add(os.path.normpath(dep["path"]))
        # A declared target without `path` lives where cargo looks for it.
        default_dirs = {"bench": "benches", "example": "examples", "test": "tests"}
        for kind in ("bin", "bench", "example", "test", "lib"):
            targets = manifest.get(kind, [])
            for target in targets if isinstance(targets, list) else [targets]:
                if not isinstance(target, dict):
                    continue
                if "path" in target:
                    needed.add(os.path.normpath(target["path"]))
                elif kind in default_dirs and "name" in target:
                    needed.add(f"{default_dirs[kind]}/{target['name']}.rs")
        builders = [s for s in stages if any("cargo build" in a and "--release" in a for _, a in s.all("RUN"))]
        for stage in builders:
            copied: list[str] = []
            for st in stages[: stage.index + 1]:
                for _, args in st.all("COPY") + st.all("ADD"):
                    flags, paths = parse_copy(args)
                    if "from" not in flags:
                        copied += [os.path.normpath(p) for p in paths[:-1]]
            for need in sorted(needed):
                covered = any(c == "." or need == c or need.startswith(c + "/") for c in copied)
                r.check(
                    covered,
                    f"{DOCKERFILE}: stage {stage.label} copies {need} (named by Cargo.toml)",
                    f"{DOCKERFILE}: stage {stage.label} builds without {need}, which Cargo.toml names: the build fails",
                )

    def check_final_stage(self, final: Stage) -> None:
        r = self.report
        where = f"{DOCKERFILE}: final stage {final.label}"
        env = final.env()
        # USER
        user = final.inherited_last("USER")
        uid = None
        if user is None:
            r.fail(f"{where}: no USER (would run as root)")
        else:
            name = user[1].split(":")[0].strip()
            uid = KNOWN_UIDS.get(name, name)
            r.check(
                uid != "0" and "$" not in name,
                f"{where}: runs as non-root USER {user[1]}",
                f"{where}: USER {user[1]} is root",
            )
        # The binary and ENTRYPOINT / CMD.
        binary_paths = set()
        for _, args in final.all("COPY"):
            flags, paths = parse_copy(args)
            if paths and os.path.basename(paths[-1]) == BINARY:
                binary_paths.add(paths[-1])
        r.check(bool(binary_paths), f"{where}: copies the {BINARY} binary to {', '.join(sorted(binary_paths))}",
                f"{where}: no COPY of the {BINARY} binary")
        entrypoint = final.inherited_last("ENTRYPOINT")
        entry_argv = exec_form(entrypoint[1]) if entrypoint else None
        if entrypoint is None:
            r.fail(f"{where}: no ENTRYPOINT")
        elif entry_argv is None:
            r.fail(f"{where}: ENTRYPOINT is not in exec form: {entrypoint[1]}")
        else:
            r.check(
                bool(entry_argv) and entry_argv[0] in binary_paths,
                f"{where}: ENTRYPOINT runs the binary {entry_argv[0] if entry_argv else ''}",
                f"{where}: ENTRYPOINT {entry_argv} does not run the copied binary ({', '.join(sorted(binary_paths)) or 'none'})",
            )
        cmd = final.inherited_last("CMD")
        if cmd is None:
            r.fail(f"{where}: no CMD (expected a subcommand such as serve)")
        else:
            cmd_argv = exec_form(cmd[1])
            if cmd_argv is None:
                r.fail(f"{where}: CMD is not in exec form: {cmd[1]}")
            else:
                full = (entry_argv or []) + cmd_argv
                self.check_invocations(f"{where} ENTRYPOINT+CMD", full, require=True)
        # HEALTHCHECK
        health = final.inherited_last("HEALTHCHECK")
        if health is None:
            r.fail(f"{where}: no HEALTHCHECK")
        else:
            kind, argv, is_exec = parse_healthcheck(health[1])
            if kind != "CMD":
                r.fail(f"{where}: HEALTHCHECK {health[1]!r} checks nothing")
            else:
                r.check(is_exec, f"{where}: HEALTHCHECK uses exec form (no shell in the image)",
                        f"{where}: HEALTHCHECK uses shell form, but the runtime image has no shell")
                r.check(
                    bool(argv) and argv[0] in binary_paths,
                    f"{where}: HEALTHCHECK runs the binary",
                    f"{where}: HEALTHCHECK {argv} does not run the copied binary",
                )
                self.check_invocations(f"{where} HEALTHCHECK", argv or [], require=True)
        # Network settings.
        host = env.get("AUTH_JIT_HOST")
        r.check(host in ("0.0.0.0", "::"), f"{where}: ENV AUTH_JIT_HOST={host} listens on all interfaces",
                f"{where}: ENV AUTH_JIT_HOST={host} is unreachable from outside the container (need 0.0.0.0)")
        port = env.get("AUTH_JIT_PORT")
        r.check(port == APP_PORT, f"{where}: ENV AUTH_JIT_PORT={port}",
                f"{where}: ENV AUTH_JIT_PORT={port}, expected {APP_PORT}")
        exposed = final.exposed()
        r.check(APP_PORT in exposed and (port is None or port in exposed),
                f"{where}: EXPOSE {APP_PORT} matches AUTH_JIT_PORT",
                f"{where}: EXPOSE {', '.join(sorted(exposed)) or 'nothing'} does not match AUTH_JIT_PORT={port}")
        # Data directory: a volume, owned by the user.
        data_dir = env.get("AUTH_JIT_DATA_DIR")
        volumes = set()
        for _, args in final.all("VOLUME"):
            argv = exec_form(args)
            volumes.update(argv if argv is not None else args.split())
        r.check(bool(data_dir) and data_dir.startswith("/") and data_dir in volumes,
                f"{where}: AUTH_JIT_DATA_DIR={data_dir} is a VOLUME",
                f"{where}: AUTH_JIT_DATA_DIR={data_dir} is not an absolute path declared as VOLUME ({', '.join(sorted(volumes)) or 'none'})")
        owners = []
        for _, args in final.all("COPY"):
            flags, paths = parse_copy(args)
            if paths and data_dir and paths[-1].rstrip("/") == data_dir.rstrip("/"):
                owners.append(flags.get("chown", ""))
        owner_uids = {KNOWN_UIDS.get(o.split(":")[0], o.split(":")[0]) for o in owners}
        r.check(uid is not None and owners != [] and owner_uids == {uid},
                f"{where}: {data_dir} is created owned by the USER (uid {uid})",
                f"{where}: {data_dir} is not created with COPY --chown={uid} (found: {owners or 'no COPY'}); the non-root user could not write it")

    # -- compose
    def check_compose_file(self, rel: str, doc: dict) -> None:
        r = self.report
        services = doc.get("services")
        r.check(isinstance(services, dict) and bool(services),
                f"{rel}: defines services {', '.join(services) if isinstance(services, dict) else ''}",
                f"{rel}: no `services` mapping")
        self.check_names(rel, read_text(self.repo, rel) or "")
        for name, service in (services or {}).items():
            for published, target, raw in parse_ports((service or {}).get("ports")):
                r.check(isinstance(raw, (str, dict)),
                        f"{rel}: {name} port {raw!r} is quoted",
                        f"{rel}: {name} port {raw!r} is not a string (YAML reads unquoted a:b as a number); quote it")

    def check_combination(self, label: str, files: list[str], docs: dict[str, dict]) -> None:
        r = self.report
        merged = merge_compose([docs[f] for f in files])
        services: dict = merged.get("services", {})
        declared_volumes = set((merged.get("volumes") or {}).keys())
        tag = f"[{label}]"
        for name, service in services.items():
            where = f"{tag} service {name}"
            # depends_on
            for dep, spec in norm_depends(service.get("depends_on")).items():
                condition = (spec or {}).get("condition", "service_started")
                if dep not in services:
                    r.fail(f"{where}: depends_on {dep!r}, which is not a service")
                    continue
                if condition not in DEPENDS_CONDITIONS:
                    r.fail(f"{where}: depends_on {dep} with unknown condition {condition!r}")
                    continue
                if condition == "service_healthy":
                    r.check(self.has_healthcheck(services[dep]),
                            f"{where}: depends_on {dep} (service_healthy, {dep} has a healthcheck)",
                            f"{where}: depends_on {dep} with service_healthy, but {dep} has no healthcheck")
                else:
                    r.ok(f"{where}: depends_on {dep} ({condition})")
            # build
            stage = None
            if "build" in service:
                build = norm_build(service["build"])
                context = build.get("context", ".")
                dockerfile = build.get("dockerfile", "Dockerfile")
                target = build.get("target")
                resolved = os.path.normpath(os.path.join(context, dockerfile)).replace(os.sep, "/")
                r.check(os.path.isdir(os.path.join(self.repo, context)),
                        f"{where}: build context {context} exists", f"{where}: build context {context} does not exist")
                r.check(resolved == DOCKERFILE and self.exists(resolved),
                        f"{where}: builds {DOCKERFILE}",
                        f"{where}: dockerfile {dockerfile} (context {context}) is not {DOCKERFILE} or does not exist")
                stage = self.stage(target) if target else None
                stage_names = ", ".join(s.label for s in self.stages)
                r.check(target is not None and stage is not None,
                        f"{where}: build target {target} is a Dockerfile stage",
                        f"{where}: build target {target!r} is not a stage of {DOCKERFILE} ({stage_names})")
            # volumes
            for entry in service.get("volumes") or []:
                volume = parse_volume(entry)
                source = volume["source"]
                if volume["type"] == "bind" and source:
                    if source.startswith(("/", "~", "$")):
                        r.note(f"{where}: host path {source} not checked")
                        continue
                    r.check(self.exists(source),
                            f"{where}: bind mount {source} exists",
                            f"{where}: bind mount source {source} does not exist relative to the project directory")
                elif volume["type"] == "volume" and source:
                    r.check(source in declared_volumes,
                            f"{where}: named volume {source} is declared",
                            f"{where}: named volume {source} is not declared under top-level volumes")
            # env_file
            for path, required in env_file_entries(service.get("env_file")):
                if path == ".env" and required:
                    r.fail(f"{where}: env_file .env must be `required: false` (.env is not committed)")
                elif required:
                    r.check(self.exists(path), f"{where}: env_file {path} exists",
                            f"{where}: env_file {path} does not exist relative to the project directory")
                else:
                    r.ok(f"{where}: env_file {path} is optional")
            # Commands that run auth-jit.
            if stage is not None:
                entry = service.get("entrypoint")
                entry_argv = as_argv(entry) if entry is not None else (
                    command_argv(stage.inherited_last("ENTRYPOINT")[1]) if stage.inherited_last("ENTRYPOINT") else [])
                cmd = service.get("command")
                cmd_argv = as_argv(cmd) if cmd is not None else (
                    command_argv(stage.inherited_last("CMD")[1]) if stage.inherited_last("CMD") else [])
                self.check_invocations(f"{where} (stage {stage.label}) runs", entry_argv + cmd_argv, require=True)
            else:
                for key in ("entrypoint", "command"):
                    if service.get(key) is not None:
                        self.check_invocations(f"{where} {key}", as_argv(service[key]))
            if service.get("healthcheck"):
                kind, argv = healthcheck_argv(service["healthcheck"].get("test"))
                if service["healthcheck"].get("disable") or kind == "NONE":
                    r.note(f"{where}: healthcheck disabled")
                elif kind not in ("CMD", "CMD-SHELL"):
                    r.fail(f"{where}: healthcheck test {service['healthcheck'].get('test')!r} is not CMD or CMD-SHELL")
                else:
                    self.check_invocations(f"{where} healthcheck", argv,
                                           require=name == APP_SERVICE)
            elif stage is not None and stage.inherited_last("HEALTHCHECK") is None:
                r.note(f"{where}: no healthcheck (stage {stage.label} has none)")
        for top in ("configs", "secrets"):
            for cname, spec in (merged.get(top) or {}).items():
                if isinstance(spec, dict) and spec.get("file"):
                    r.check(self.exists(spec["file"]), f"{tag} {top} {cname}: {spec['file']} exists",
                            f"{tag} {top} {cname}: {spec['file']} does not exist relative to the project directory")
        for name, service in services.items():
            self.check_key_encryption(f"{tag} service {name}", service, merged)
        if APP_SERVICE not in services:
            r.fail(f"{tag}: no {APP_SERVICE} service")
            return
        self.check_app(tag, services, merged)
        if COMPOSE_OTLP in files:
            self.check_otlp(tag, services)
        if label == "compose":
            self.check_base(tag, services)
        if COMPOSE_DEV in files:
            self.check_dev(tag, services)

    def check_key_encryption(self, where: str, service: dict, merged: dict) -> None:
        """A Redis store needs the key-encryption key (the key ring lives in
        Redis, encrypted with it): AUTH_JIT_KEY_ENCRYPTION_KEY as a required
        `${VAR:?message}` interpolation, or AUTH_JIT_KEY_ENCRYPTION_KEY_FILE
        naming a file a secret or volume of the service provides. A key
        written in a compose file or baked into the image is a leaked secret,
        whatever the store."""
        r = self.report
        stage = None
        if "build" in service:
            stage = self.stage(norm_build(service["build"]).get("target"))
        stage_env = stage.env() if stage else {}
        env = norm_environment(service.get("environment"))
        if stage_env.get(KEK_VAR):
            r.fail(f"{where}: stage {stage.label} bakes {KEK_VAR} into the image with ENV: a leaked secret")
        store = resolve(env[STORE_VAR]) if env.get(STORE_VAR) is not None else stage_env.get(STORE_VAR)
        scheme = urlsplit(store or "").scheme.lower()
        redis = scheme in REDIS_SCHEMES
        has_key, has_file = KEK_VAR in env, KEK_FILE_VAR in env
        if not (has_key or has_file):
            if redis:
                r.fail(f"{where}: {STORE_VAR} is {scheme}:// but the service sets neither {KEK_VAR} nor {KEK_FILE_VAR}: "
                       f"the server refuses to start (the key ring in Redis is encrypted with it)")
            return
        if has_key and has_file:
            r.fail(f"{where}: sets both {KEK_VAR} and {KEK_FILE_VAR}; the server accepts only one")
            return
        if has_key:
            problem = secret_value_problem(KEK_VAR, env[KEK_VAR])
            r.check(problem is None,
                    f"{where}: {KEK_VAR} is a required ${{...:?}} interpolation (from .env or the shell)"
                    + (f" for the {scheme}:// store" if redis else ""),
                    f"{where}: {problem}")
            return
        raw = env[KEK_FILE_VAR]
        path = resolve(raw) if raw is not None else None
        if not path:
            if raw is not None and REQUIRED_RE.match(str(raw).strip()):
                r.note(f"{where}: {KEK_FILE_VAR} comes from .env or the shell; the file it names is not checked")
                return
            r.fail(f"{where}: {KEK_FILE_VAR} is empty (or only set by the shell without being required)"
                   + (": the server refuses to start with the Redis store" if redis else ""))
            return
        if not path.startswith("/"):
            r.fail(f"{where}: {KEK_FILE_VAR}={path} is not an absolute path in the container")
            return
        path = os.path.normpath(path)
        secret = secret_mounts(service).get(path)
        if secret is not None:
            declared = (merged.get("secrets") or {})
            spec = declared.get(secret)
            r.check(isinstance(spec, dict) and any(spec.get(k) for k in ("file", "environment", "external", "name")),
                    f"{where}: {KEK_FILE_VAR}={path} is provided by secret {secret}",
                    f"{where}: {KEK_FILE_VAR}={path} uses secret {secret!r}, which is not declared under top-level secrets with a file or environment")
            return
        for entry in service.get("volumes") or []:
            volume = parse_volume(entry)
            target = os.path.normpath(str(volume["target"] or "")) if volume["target"] else ""
            if target and (path == target or path.startswith(target.rstrip("/") + "/")):
                r.ok(f"{where}: {KEK_FILE_VAR}={path} is provided by the volume mounted at {target}")
                return
        r.fail(f"{where}: {KEK_FILE_VAR}={path} is not provided by a secret or volume of the service "
               f"(secrets at {', '.join(sorted(secret_mounts(service))) or 'none'})")

    def has_healthcheck(self, service: dict) -> bool:
        health = service.get("healthcheck")
        if health:
            kind, _ = healthcheck_argv(health.get("test"))
            return not health.get("disable") and kind in ("CMD", "CMD-SHELL")
        if "build" in service:
            stage = self.stage(norm_build(service["build"]).get("target"))
            if stage is not None:
                found = stage.inherited_last("HEALTHCHECK")
                return found is not None and parse_healthcheck(found[1])[0] == "CMD"
        return False

    def app_env(self, service: dict) -> tuple[dict[str, str | None], Stage | None]:
        stage = None
        if "build" in service:
            stage = self.stage(norm_build(service["build"]).get("target"))
        env: dict[str, str | None] = dict(stage.env()) if stage else {}
        for key, value in norm_environment(service.get("environment")).items():
            env[key] = resolve(value)
        return env, stage

    def check_app(self, tag: str, services: dict, merged: dict) -> None:
        r = self.report
        service = services[APP_SERVICE]
        where = f"{tag} {APP_SERVICE}"
        env, stage = self.app_env(service)
        host = env.get("AUTH_JIT_HOST")
        r.check(host in ("0.0.0.0", "::"), f"{where}: AUTH_JIT_HOST={host}",
                f"{where}: AUTH_JIT_HOST={host} is unreachable from outside the container (need 0.0.0.0)")
        port = env.get("AUTH_JIT_PORT")
        ports = parse_ports(service.get("ports"))
        targets = {t for _, t, _ in ports}
        r.check(port == APP_PORT and port in targets,
                f"{where}: publishes {', '.join(str(raw) for _, _, raw in ports)} to AUTH_JIT_PORT={port}",
                f"{where}: AUTH_JIT_PORT={port} is not the published container port ({', '.join(sorted(targets)) or 'none'}) or not {APP_PORT}")
        if stage is not None:
            exposed = stage.exposed()
            r.check(port in exposed, f"{where}: AUTH_JIT_PORT={port} is EXPOSEd by stage {stage.label}",
                    f"{where}: AUTH_JIT_PORT={port} is not EXPOSEd by stage {stage.label} ({', '.join(sorted(exposed)) or 'nothing'})")
        data_dir = env.get("AUTH_JIT_DATA_DIR")
        targets = {parse_volume(v)["target"] for v in service.get("volumes") or []}
        r.check(bool(data_dir) and data_dir in targets,
                f"{where}: AUTH_JIT_DATA_DIR={data_dir} is a mounted volume",
                f"{where}: AUTH_JIT_DATA_DIR={data_dir} is not a volume mount ({', '.join(sorted(targets)) or 'none'}): keys would be lost")
        store = env.get("AUTH_JIT_STORE_URL")
        if store:
            store_host, store_port = split_host_port(store)
            depends = norm_depends(service.get("depends_on"))
            r.check(store_host in services and store_host in depends,
                    f"{where}: AUTH_JIT_STORE_URL host {store_host} is a service it depends on",
                    f"{where}: AUTH_JIT_STORE_URL host {store_host!r} is not a service it depends_on")
        issuer = env.get("AUTH_JIT_ISSUER")
        if issuer is not None:
            parts = urlsplit(issuer)
            r.check(parts.scheme in ("http", "https") and bool(parts.hostname),
                    f"{where}: AUTH_JIT_ISSUER defaults to {issuer}",
                    f"{where}: AUTH_JIT_ISSUER={issuer!r} is not an http(s) URL")

    def check_base(self, tag: str, services: dict) -> None:
        r = self.report
        service = services[APP_SERVICE]
        build = norm_build(service.get("build"))
        final = self.stages[-1].name if self.stages else None
        r.check(build.get("target") is not None and build.get("target") == final,
                f"{tag} {APP_SERVICE}: builds the final (runtime) stage {final}",
                f"{tag} {APP_SERVICE}: build target {build.get('target')!r} is not the final stage {final!r}")
        published = [p for p, t, _ in parse_ports(service.get("ports")) if t == APP_PORT]
        r.check(APP_PORT in published, f"{tag} {APP_SERVICE}: port {APP_PORT} published as {APP_PORT}",
                f"{tag} {APP_SERVICE}: container port {APP_PORT} is not published as host port {APP_PORT}")

    def check_dev(self, tag: str, services: dict) -> None:
        r = self.report
        service = services[APP_SERVICE]
        stage = self.stage(norm_build(service.get("build")).get("target"))
        workdir = stage.inherited_last("WORKDIR")[1] if stage and stage.inherited_last("WORKDIR") else None
        mounts = {parse_volume(v)["target"]: parse_volume(v) for v in service.get("volumes") or []}
        src = mounts.get(workdir)
        r.check(src is not None and src["type"] == "bind" and os.path.normpath(src["source"] or "") == ".",
                f"{tag} {APP_SERVICE}: source mounted at the stage WORKDIR {workdir}",
                f"{tag} {APP_SERVICE}: the repository (.) is not mounted at the dev stage WORKDIR {workdir}")

    def check_otlp(self, tag: str, services: dict) -> None:
        r = self.report
        env, _ = self.app_env(services[APP_SERVICE])
        where = f"{tag} {APP_SERVICE}"
        endpoint = env.get("AUTH_JIT_OTLP_ENDPOINT") or ""
        protocol = (env.get("AUTH_JIT_OTLP_PROTOCOL") or "grpc").lower()
        r.check(protocol in ("grpc", "http"), f"{where}: AUTH_JIT_OTLP_PROTOCOL={protocol}",
                f"{where}: AUTH_JIT_OTLP_PROTOCOL={protocol!r} is not grpc or http")
        parts = urlsplit(endpoint)
        try:
            endpoint_port = str(parts.port) if parts.port else ""
        except ValueError:
            endpoint_port = ""
        endpoint_host = parts.hostname or ""
        if not (parts.scheme in ("http", "https") and endpoint_host and endpoint_port):
            r.fail(f"{where}: AUTH_JIT_OTLP_ENDPOINT={endpoint!r} is not http://service:port")
            return
        collector = services.get(endpoint_host)
        if collector is None:
            r.fail(f"{where}: AUTH_JIT_OTLP_ENDPOINT host {endpoint_host!r} is not a service")
            return
        r.ok(f"{where}: AUTH_JIT_OTLP_ENDPOINT host {endpoint_host} is a service")
        r.check(endpoint_host in norm_depends(services[APP_SERVICE].get("depends_on")),
                f"{where}: depends_on {endpoint_host}", f"{where}: does not depend_on {endpoint_host}")
        # Which config file does the collector read?
        argv = as_argv(collector.get("command"))
        config_path = None
        for i, token in enumerate(argv):
            if token.startswith("--config="):
                config_path = token.split("=", 1)[1]
            elif token == "--config" and i + 1 < len(argv):
                config_path = argv[i + 1]
        mounted = None
        for entry in collector.get("volumes") or []:
            volume = parse_volume(entry)
            if volume["target"] == config_path and volume["type"] == "bind":
                mounted = os.path.normpath(volume["source"] or "").replace(os.sep, "/")
        if not r.check(mounted == COLLECTOR_CONFIG,
                       f"{tag} {endpoint_host}: reads {COLLECTOR_CONFIG} (mounted at {config_path})",
                       f"{tag} {endpoint_host}: --config {config_path} is not {COLLECTOR_CONFIG} mounted there (mounted: {mounted})"):
            return
        config = self.collector
        if config is None:
            r.fail(f"{tag}: {COLLECTOR_CONFIG} unusable")
            return
        pipelines = ((config.get("service") or {}).get("pipelines") or {})
        traces = [p for n, p in pipelines.items() if str(n).split("/")[0] == "traces"]
        receivers_used = {x for p in traces for x in (p or {}).get("receivers", [])}
        exporters_used = {x for p in traces for x in (p or {}).get("exporters", [])}
        listening = {}
        for rname, spec in (config.get("receivers") or {}).items():
            if rname not in receivers_used or str(rname).split("/")[0] != "otlp":
                continue
            for proto, pspec in ((spec or {}).get("protocols") or {}).items():
                default = "4317" if proto == "grpc" else "4318"
                host, port = split_host_port(((pspec or {}).get("endpoint")) or f"localhost:{default}")
                listening[(proto, port)] = (rname, host)
        match = listening.get((protocol, endpoint_port))
        if match is None:
            offered = ", ".join(f"{p}:{port}" for p, port in sorted(listening)) or "none"
            r.fail(f"{where}: AUTH_JIT_OTLP_ENDPOINT {endpoint_host}:{endpoint_port} ({protocol}) is not a port the collector's traces pipeline listens on ({offered})")
        else:
            r.check(match[1] in WILDCARD_HOSTS,
                    f"{where}: AUTH_JIT_OTLP_ENDPOINT {endpoint_host}:{endpoint_port} ({protocol}) reaches receiver {match[0]}",
                    f"{where}: collector receiver {match[0]} {protocol} listens on {match[1]}:{endpoint_port}, unreachable from other containers (need 0.0.0.0)")
        # Collector -> Jaeger.
        jaeger = [n for n, s in services.items() if str((s or {}).get("image", "")).startswith("jaegertracing/")]
        forwards = []
        for ename in sorted(exporters_used):
            spec = (config.get("exporters") or {}).get(ename) or {}
            kind = str(ename).split("/")[0]
            if kind not in ("otlp", "otlphttp") or not spec.get("endpoint"):
                continue
            host, port = split_host_port(str(spec["endpoint"]))
            forwards.append((ename, kind, host, port, spec))
        to_jaeger = [f for f in forwards if f[2] in jaeger]
        if not r.check(bool(jaeger) and bool(to_jaeger),
                       f"{tag} {endpoint_host}: exports traces to the jaeger service via {', '.join(f[0] for f in to_jaeger)}",
                       f"{tag} {endpoint_host}: no traces exporter sends to a jaegertracing service "
                       f"(exporters to {', '.join(f'{f[2]}:{f[3]}' for f in forwards) or 'nothing'}; jaeger services: {', '.join(jaeger) or 'none'})"):
            return
        for ename, kind, host, port, spec in to_jaeger:
            wanted = "4317" if kind == "otlp" else "4318"
            r.check(port == wanted, f"{tag} {ename}: {host}:{port} is Jaeger's OTLP {'gRPC' if kind == 'otlp' else 'HTTP'} port",
                    f"{tag} {ename}: {host}:{port} is not Jaeger's OTLP port {wanted}")
            insecure = ((spec.get("tls") or {}).get("insecure") is True) or str(spec["endpoint"]).startswith("http://")
            r.check(insecure, f"{tag} {ename}: plaintext to {host} (tls insecure)",
                    f"{tag} {ename}: TLS to {host}, which serves plaintext OTLP (set tls.insecure: true)")
            jservice = services[host]
            jenv = {k: resolve(v) for k, v in norm_environment(jservice.get("environment")).items()}
            r.check(str(jenv.get("COLLECTOR_OTLP_ENABLED", "")).lower() == "true",
                    f"{tag} {host}: COLLECTOR_OTLP_ENABLED=true",
                    f"{tag} {host}: COLLECTOR_OTLP_ENABLED is not true")
            r.check(host in norm_depends(collector.get("depends_on")),
                    f"{tag} {endpoint_host}: depends_on {host}",
                    f"{tag} {endpoint_host}: does not depend_on {host}")
        for jname in jaeger:
            ui = [p for p, t, _ in parse_ports(services[jname].get("ports")) if t == JAEGER_UI_PORT]
            r.check(JAEGER_UI_PORT in ui, f"{tag} {jname}: Jaeger UI published on {JAEGER_UI_PORT}",
                    f"{tag} {jname}: Jaeger UI port {JAEGER_UI_PORT} is not published as {JAEGER_UI_PORT}")

    def check_collector(self, config: dict) -> None:
        r = self.report
        rel = COLLECTOR_CONFIG
        pipelines = ((config.get("service") or {}).get("pipelines") or {})
        if not r.check(any(str(n).split("/")[0] == "traces" for n in pipelines),
                       f"{rel}: has a traces pipeline", f"{rel}: no traces pipeline under service.pipelines"):
            return
        for pname, pipeline in pipelines.items():
            for section in ("receivers", "processors", "exporters"):
                defined = set((config.get(section) or {}).keys())
                for component in (pipeline or {}).get(section, []) or []:
                    r.check(component in defined, f"{rel}: pipeline {pname} {section[:-1]} {component} is defined",
                            f"{rel}: pipeline {pname} uses {section[:-1]} {component!r}, not defined under {section}")
            if not (pipeline or {}).get("receivers") or not (pipeline or {}).get("exporters"):
                r.fail(f"{rel}: pipeline {pname} needs receivers and exporters")

    def check_dockerignore(self) -> None:
        r = self.report
        text = read_text(self.repo, DOCKERIGNORE)
        if text is None:
            r.fail(f"{DOCKERIGNORE}: missing (target/, .git and .env would be sent to the build)")
            return
        patterns = dockerignore_patterns(text)
        missing = [p for p in MUST_IGNORE if not ignored(p, patterns)]
        r.check(not missing, f"{DOCKERIGNORE}: excludes {', '.join(MUST_IGNORE)}",
                f"{DOCKERIGNORE}: does not exclude {', '.join(missing)}")

    def check_env_example_secrets(self, text: str) -> None:
        """.env.example is committed: it documents the key-encryption key
        but must not hold one."""
        values = [line.split("=", 1)[1].strip() for line in text.splitlines()
                  if line.strip().startswith(f"{KEK_VAR}=")]
        leaked = [v for v in values if v.strip("'\"")]
        self.report.check(not leaked, f"{ENV_EXAMPLE}: sets no {KEK_VAR} value",
                          f"{ENV_EXAMPLE}: sets {KEK_VAR} to a value: a key in a committed file is a leaked secret (leave it commented out or empty)")

    def check_cli(self) -> None:
        """The subcommands the Docker files use against src/cli.rs, once
        src/cli.rs is new enough to have the `settings` subcommand (whose
        output fed this run)."""
        r = self.report
        known = cli_subcommands(self.repo)
        used = sorted(self.used_subcommands)
        if known is None or "settings" not in known:
            r.note(f"{CLI_SOURCE}: no `settings` subcommand found; subcommands used ({', '.join(used)}) not cross-checked")
            return
        missing = [s for s in used if s not in known]
        r.check(not missing, f"{CLI_SOURCE}: defines every subcommand used ({', '.join(used)})",
                f"{CLI_SOURCE}: subcommand(s) {', '.join(missing)} used by the Docker files are not defined")

    # -- all
    def run(self) -> None:
        self.check_settings()
        self.check_dockerfile()
        self.check_dockerignore()
        env_example = read_text(self.repo, ENV_EXAMPLE)
        if env_example is None:
            self.report.fail(f"{ENV_EXAMPLE}: file missing")
        else:
            self.check_names(ENV_EXAMPLE, env_example)
            self.check_env_example_secrets(env_example)
        docs = {}
        for rel in (COMPOSE_BASE, COMPOSE_DEV, COMPOSE_OTLP):
            doc = load_yaml(self.repo, rel, self.report)
            if doc is not None:
                docs[rel] = doc
                self.check_compose_file(rel, doc)
        self.collector = load_yaml(self.repo, COLLECTOR_CONFIG, self.report)
        if self.collector is not None:
            self.check_collector(self.collector)
        for label, files in COMBINATIONS:
            if all(f in docs for f in files):
                self.check_combination(label, files, docs)
            else:
                self.report.fail(f"[{label}]: not checked, a compose file is missing or invalid")
        self.check_cli()


def read_settings(path: str) -> set[str]:
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = SETTING_LINE_RE.match(line.strip())
            if m:
                names.add(m.group(1))
    return names


def run_checks(repo: str, settings: set[str], out=None) -> Report:
    report = Report(out)
    Checker(repo, settings, report).run()
    return report


# --------------------------------------------------------------------------
# Self-test: broken copies must be caught by the check meant for them.

# The key-encryption key line of the base compose file, and a well-formed
# key that must never be accepted in a committed file.
KEK_LINE_RE = re.compile(r"^ *AUTH_JIT_KEY_ENCRYPTION_KEY:.*\n", re.MULTILINE)
FAKE_KEK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

# (name, file, old text, new text, a substring of the FAIL line expected).
# `old` may be a compiled regex (its first match is replaced), `new` then a
# replacement string or function as re.sub takes; `old` None is special.
MUTATIONS = [
    ("misspelled variable in compose", COMPOSE_BASE, "AUTH_JIT_STORE_URL:", "AUTH_JIT_STORE_URI:", "unknown AUTH_JIT_* variable(s) AUTH_JIT_STORE_URI"),
    ("misspelled variable in Dockerfile ENV", DOCKERFILE, "AUTH_JIT_DATA_DIR=/data\nUSER", "AUTH_JIT_DATADIR=/data\nUSER", "AUTH_JIT_DATADIR"),
    ("misspelled variable in .env.example", ENV_EXAMPLE, "AUTH_JIT_LEEWAY=", "AUTH_JIT_LEWAY=", "AUTH_JIT_LEWAY"),
    ("misspelled variable in OTLP overlay", COMPOSE_OTLP, "AUTH_JIT_OTLP_PROTOCOL: grpc", "AUTH_JIT_OTLP_PROTO: grpc", "AUTH_JIT_OTLP_PROTO"),
    ("missing USER", DOCKERFILE, "USER 65532:65532\n", "", "no USER"),
    ("USER root", DOCKERFILE, "USER 65532:65532\n", "USER root\n", "is root"),
    ("nonexistent build target", COMPOSE_DEV, "target: dev", "target: develop", "build target 'develop' is not a stage"),
    ("wrong dockerfile path", COMPOSE_BASE, "dockerfile: docker/Dockerfile", "dockerfile: Dockerfile", "is not docker/Dockerfile"),
    ("base builds a non-final stage", COMPOSE_BASE, "target: runtime", "target: builder", "is not the final stage"),
    ("missing HEALTHCHECK", DOCKERFILE, "HEALTHCHECK --interval", "# HEALTHCHECK --interval", "no HEALTHCHECK"),
    ("misspelled healthcheck subcommand", DOCKERFILE, '"/usr/local/bin/auth-jit", "healthcheck"]', '"/usr/local/bin/auth-jit", "health-check"]', "unknown subcommand 'health-check'"),
    ("misspelled CMD subcommand", DOCKERFILE, 'CMD ["serve"]', 'CMD ["server"]', "unknown subcommand 'server'"),
    ("misspelled dev subcommand", DOCKERFILE, '"run -- serve"', '"run -- srve"', "unknown subcommand 'srve'"),
    ("ENTRYPOINT not the binary", DOCKERFILE, 'ENTRYPOINT ["/usr/local/bin/auth-jit"]', 'ENTRYPOINT ["/usr/bin/auth-jit"]', "does not run the copied binary"),
    ("EXPOSE wrong port", DOCKERFILE, "EXPOSE 8000\nVOLUME", "EXPOSE 8080\nVOLUME", "EXPOSE 8080 does not match"),
    (":latest base image", DOCKERFILE, "FROM rust:1.95-bookworm AS base", "FROM rust:latest AS base", "uses :latest"),
    ("untagged base image", DOCKERFILE, "FROM gcr.io/distroless/cc-debian12:nonroot AS runtime", "FROM gcr.io/distroless/cc-debian12 AS runtime", "has no tag"),
    ("single stage", DOCKERFILE, None, None, "needs at least 2 FROM stages"),
    ("COPY --from unknown stage", DOCKERFILE, "COPY --from=builder /out/auth-jit", "COPY --from=build /out/auth-jit", "COPY --from=build is not a stage"),
    ("workspace member not copied", DOCKERFILE, "COPY verifier ./verifier\n", "", "builds without verifier, which Cargo.toml names"),
    ("bench file not copied", DOCKERFILE, "COPY benches ./benches\n", "", "builds without benches/hot.rs"),
    ("COPY of a missing source", DOCKERFILE, "COPY static ./static", "COPY assets ./assets", "COPY source assets does not exist"),
    ("data dir not chowned", DOCKERFILE, "--chown=65532:65532 /out/data", "/out/data", "COPY --chown=65532"),
    ("host 127.0.0.1 in compose", COMPOSE_BASE, "AUTH_JIT_HOST: 0.0.0.0", "AUTH_JIT_HOST: 127.0.0.1", "AUTH_JIT_HOST=127.0.0.1 is unreachable"),
    ("published port mismatch", COMPOSE_BASE, '"8000:8000"', '"8000:8080"', "is not the published container port"),
    ("unquoted port", COMPOSE_DEV, "    image: auth-jit:dev\n", "    image: auth-jit:dev\n    ports:\n      - 22:22\n", "is not a string"),
    ("depends_on unknown service", COMPOSE_BASE, "      redis:\n        condition: service_healthy", "      redis-server:\n        condition: service_healthy", "depends_on 'redis-server', which is not a service"),
    ("service_healthy without healthcheck", COMPOSE_OTLP, "      otel-collector:\n        condition: service_started", "      otel-collector:\n        condition: service_healthy", "has no healthcheck"),
    ("undeclared named volume", COMPOSE_DEV, "  cargo-target:\n", "", "cargo-target is not declared"),
    ("missing bind mount source", COMPOSE_OTLP, "./docker/otel-collector.yaml:", "./docker/otel-config.yaml:", "bind mount source ./docker/otel-config.yaml does not exist"),
    ("required .env", COMPOSE_BASE, "        required: false", "        required: true", "must be `required: false`"),
    ("data dir not a volume", COMPOSE_BASE, "      - auth-jit-data:/data\n", "      - auth-jit-data:/var/lib/auth-jit\n", "is not a volume mount"),
    ("source not mounted in dev", COMPOSE_DEV, "      - .:/src\n", "      - .:/app\n", "is not mounted at the dev stage WORKDIR"),
    ("OTLP endpoint wrong port", COMPOSE_OTLP, "http://otel-collector:4317", "http://otel-collector:4319", "is not a port the collector"),
    ("OTLP endpoint wrong protocol", COMPOSE_OTLP, "AUTH_JIT_OTLP_PROTOCOL: grpc", "AUTH_JIT_OTLP_PROTOCOL: http", "is not a port the collector"),
    ("OTLP endpoint wrong host", COMPOSE_OTLP, "http://otel-collector:4317", "http://collector:4317", "host 'collector' is not a service"),
    ("collector config not mounted", COMPOSE_OTLP, "--config=/etc/otelcol/config.yaml", "--config=/etc/otelcol-contrib/config.yaml", "is not docker/otel-collector.yaml mounted there"),
    ("collector receiver on localhost", COLLECTOR_CONFIG, "endpoint: 0.0.0.0:4317", "endpoint: localhost:4317", "unreachable from other containers"),
    ("collector exports elsewhere", COLLECTOR_CONFIG, "endpoint: jaeger:4317", "endpoint: tempo:4317", "no traces exporter sends to a jaegertracing service"),
    ("collector exporter undefined", COLLECTOR_CONFIG, "exporters: [otlp/jaeger, debug]", "exporters: [otlp/jaeger, logging]", "uses exporter 'logging', not defined"),
    ("collector TLS to jaeger", COLLECTOR_CONFIG, "      insecure: true\n", "      insecure: false\n", "set tls.insecure: true"),
    ("Jaeger UI not published", COMPOSE_OTLP, '"16686:16686"', '"16687:16686"', "Jaeger UI port 16686 is not published"),
    ("invalid YAML", COMPOSE_OTLP, "services:\n", "services:\n\t", "invalid YAML"),
    ("duplicate YAML key", COMPOSE_BASE, "    restart: unless-stopped\n", "    restart: unless-stopped\n    restart: always\n", "duplicate key"),
    (".dockerignore lets .env in", DOCKERIGNORE, "\n.env\n", "\n", "does not exclude .env"),
    # The key-encryption key a Redis store needs (the line is found by a regex,
    # so the wording of its `:?` message may change).
    ("Redis store without a key-encryption key", COMPOSE_BASE, KEK_LINE_RE, "",
     "sets neither AUTH_JIT_KEY_ENCRYPTION_KEY nor AUTH_JIT_KEY_ENCRYPTION_KEY_FILE"),
    ("key-encryption key as a literal", COMPOSE_BASE, KEK_LINE_RE,
     f"      {KEK_VAR}: {FAKE_KEK}\n", "AUTH_JIT_KEY_ENCRYPTION_KEY is a literal value"),
    ("key-encryption key with a default", COMPOSE_BASE, "${AUTH_JIT_KEY_ENCRYPTION_KEY:?", "${AUTH_JIT_KEY_ENCRYPTION_KEY:-",
     "AUTH_JIT_KEY_ENCRYPTION_KEY has a default"),
    ("key-encryption key not required", COMPOSE_BASE, "${AUTH_JIT_KEY_ENCRYPTION_KEY:?", "${AUTH_JIT_KEY_ENCRYPTION_KEY:+",
     "AUTH_JIT_KEY_ENCRYPTION_KEY='${AUTH_JIT_KEY_ENCRYPTION_KEY:+"),
    ("key-encryption key passed through unrequired", COMPOSE_BASE, KEK_LINE_RE, f"      {KEK_VAR}:\n",
     "AUTH_JIT_KEY_ENCRYPTION_KEY is passed through without a value"),
    ("key-encryption key file without a secret", COMPOSE_BASE, KEK_LINE_RE,
     f"      {KEK_FILE_VAR}: {SECRETS_DIR}/auth-jit-kek\n", "is not provided by a secret or volume"),
    ("key-encryption key and file both set", COMPOSE_BASE, KEK_LINE_RE,
     lambda m: m.group(0) + f"      {KEK_FILE_VAR}: /data/kek\n", "sets both"),
    ("key-encryption key overlay literal", COMPOSE_DEV, "      AUTH_JIT_ENVIRONMENT: dev\n",
     f"      AUTH_JIT_ENVIRONMENT: dev\n      {KEK_VAR}: \"{FAKE_KEK}\"\n",
     "[compose+dev] service auth-jit: AUTH_JIT_KEY_ENCRYPTION_KEY is a literal value"),
    ("key-encryption key baked into the image", DOCKERFILE, "AUTH_JIT_DATA_DIR=/data\nUSER",
     f"AUTH_JIT_DATA_DIR=/data\nENV {KEK_VAR}={FAKE_KEK}\nUSER", "bakes AUTH_JIT_KEY_ENCRYPTION_KEY into the image"),
    ("key-encryption key in .env.example", ENV_EXAMPLE, "# AUTH_JIT_KEY_ENCRYPTION_KEY=\n",
     f"{KEK_VAR}={FAKE_KEK}\n", ".env.example: sets AUTH_JIT_KEY_ENCRYPTION_KEY to a value"),
]

# Changed copies that must still pass: other correct ways to follow a rule.
# (name, file, [(old, new), ...]) with old and new as in MUTATIONS.
VARIANTS = [
    ("key-encryption key from a file provided by a secret", COMPOSE_BASE, [
        (KEK_LINE_RE, f"      {KEK_FILE_VAR}: {SECRETS_DIR}/auth-jit-kek\n"),
        ("    volumes:\n      - auth-jit-data:/data\n",
         "    secrets:\n      - auth-jit-kek\n    volumes:\n      - auth-jit-data:/data\n"),
        (re.compile(r"\Z"), f"secrets:\n  auth-jit-kek:\n    environment: {KEK_VAR}\n"),
    ]),
    ("key-encryption key from a file on a volume", COMPOSE_BASE, [
        (KEK_LINE_RE, f"      {KEK_FILE_VAR}: /data/kek.b64\n"),
    ]),
    ("key-encryption key required under another name", COMPOSE_BASE, [
        (KEK_LINE_RE, f"      {KEK_VAR}: ${{KEK_BASE64:?set KEK_BASE64}}\n"),
    ]),
]


def _single_stage(text: str) -> str:
    """Keeps only the last stage, so the Dockerfile has one FROM."""
    index = text.rfind("\nFROM ")
    return text[index + 1 :]


def _mutate(original: str, old, new) -> str | None:
    """`original` with the first `old` replaced by `new`, or None when `old`
    is not there."""
    if old is None:
        return _single_stage(original)
    if isinstance(old, re.Pattern):
        if not old.search(original):
            return None
        return old.sub(new if callable(new) else new.replace("\\", "\\\\"), original, count=1)
    if old not in original:
        return None
    return original.replace(old, new, 1)


def _show(old) -> str:
    return f"/{old.pattern}/" if isinstance(old, re.Pattern) else repr(old)


def self_test(repo: str, settings: set[str]) -> int:
    passed = failed = 0

    def say(ok: bool, message: str) -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(f"{'ok' if ok else 'FAIL'}: self-test: {message}")

    with tempfile.TemporaryDirectory(prefix="check-docker-") as tmp:
        copy = os.path.join(tmp, "repo")
        os.makedirs(os.path.join(copy, "docker"))
        for rel in (DOCKERFILE, COMPOSE_BASE, COMPOSE_DEV, COMPOSE_OTLP, COLLECTOR_CONFIG, ENV_EXAMPLE,
                    DOCKERIGNORE, "Cargo.toml", "Cargo.lock", CLI_SOURCE):
            src = os.path.join(repo, rel)
            if os.path.isfile(src):
                os.makedirs(os.path.dirname(os.path.join(copy, rel)), exist_ok=True)
                shutil.copy2(src, os.path.join(copy, rel))
        # Directories only need to exist (COPY sources, bind mounts).
        for rel in ("src", "static", "verifier", "benches"):
            if os.path.isdir(os.path.join(repo, rel)):
                os.makedirs(os.path.join(copy, rel), exist_ok=True)

        baseline = run_checks(copy, settings, out=io.StringIO())
        say(baseline.failed == 0 and baseline.passed > 0,
            f"intact copy passes ({baseline.passed} checks)" if baseline.failed == 0
            else f"intact copy fails: {'; '.join(baseline.failures)}")
        if baseline.failed:
            print(f"check_docker self-test: {passed} ok, {failed} failed")
            return 1

        for name, rel, old, new, expected in MUTATIONS:
            path = os.path.join(copy, rel)
            with open(path, encoding="utf-8") as f:
                original = f.read()
            mutated = _mutate(original, old, new)
            if mutated is None:
                say(False, f"{name}: the text to break is no longer in {rel}: {_show(old)}")
                continue
            with open(path, "w", encoding="utf-8") as f:
                f.write(mutated)
            try:
                report = run_checks(copy, settings, out=io.StringIO())
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
            hits = [m for m in report.failures if expected in m]
            if hits:
                say(True, f"{name}: detected ({hits[0]})")
            elif report.failed:
                say(False, f"{name}: failed, but not as expected ({expected!r}): {'; '.join(report.failures)}")
            else:
                say(False, f"{name}: not detected")

        for name, rel, edits in VARIANTS:
            path = os.path.join(copy, rel)
            with open(path, encoding="utf-8") as f:
                original = f.read()
            mutated = original
            for old, new in edits:
                changed = _mutate(mutated, old, new)
                if changed is None:
                    break
                mutated = changed
            if changed is None:
                say(False, f"{name}: the text to change is no longer in {rel}: {_show(old)}")
                continue
            with open(path, "w", encoding="utf-8") as f:
                f.write(mutated)
            try:
                report = run_checks(copy, settings, out=io.StringIO())
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
            say(report.failed == 0, f"{name}: accepted" if report.failed == 0
                else f"{name}: rejected: {'; '.join(report.failures)}")

        # A settings file without a name the Docker files use.
        fewer = settings - {"AUTH_JIT_OTLP_PROTOCOL"}
        report = run_checks(copy, fewer, out=io.StringIO())
        say(any("AUTH_JIT_OTLP_PROTOCOL" in m for m in report.failures),
            "a setting missing from `auth-jit settings` is detected")
        report = run_checks(copy, set(), out=io.StringIO())
        say(report.failed > 0, "an empty settings file is detected")

    print(f"check_docker self-test: {passed} ok, {failed} failed")
    return 0 if failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="repository root (the compose project directory)")
    parser.add_argument("--settings-file", required=True,
                        help="output of `auth-jit settings` (AUTH_JIT_NAME=value lines)")
    parser.add_argument("--self-test", action="store_true",
                        help="check that deliberately broken copies are detected")
    args = parser.parse_args(argv)
    repo = os.path.abspath(args.repo)
    if not os.path.isdir(repo):
        print(f"check_docker: --repo {repo} is not a directory", file=sys.stderr)
        return 2
    try:
        settings = read_settings(args.settings_file)
    except OSError as e:
        print(f"check_docker: --settings-file: {e}", file=sys.stderr)
        return 2
    if args.self_test:
        return self_test(repo, settings)
    report = run_checks(repo, settings)
    print(f"check_docker: {report.passed} ok, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
