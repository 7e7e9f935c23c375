"""docker/: the compose file, the image and the Prometheus files hold together with the project.

Docker's compose plugin is not on every machine (nor on this project's CI), so the compose file
is read as YAML and checked against the project itself: every command, module and option it
runs exists (asked of the command's own `--help`, in the service's environment), every file it
mounts or builds from exists, every environment variable it sets is a documented setting that
the code reads, services depend on services that exist (and are healthy when they say so), the
proxy mounts the cluster suite's own docker/haproxy.cfg, REDIS_URL names the shards and the
Sentinel that compose runs, and Prometheus scrapes every hub and feed where they serve metrics.
Where `docker compose` exists, `docker compose config` must accept the file too.

Each check is shown to fail on a broken copy (`test_a_broken_*`): a check that cannot fail proves
nothing. The alert rules are unit-tested with promtool (docker/prometheus/alerts.test.yml).
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from marketstream.adapters.shards import parse_urls
from tests.cluster.cluster import HAPROXY_CFG

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
PROMETHEUS = DOCKER / "prometheus"
GRAFANA = DOCKER / "grafana"
PROMTOOL = "/usr/bin/promtool"
HAPROXY = "/usr/sbin/haproxy"
PRODUCT = ("marketstream", "feeds", "consumers")  # the code that runs in the image
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
# set by the image or by Python/Django themselves, not settings of the project
RUNTIME_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "DJANGO_SETTINGS_MODULE"}
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev)\b")
HAPROXY_TARGET = "/usr/local/etc/haproxy/haproxy.cfg"
PROMETHEUS_PORT = 9090

# -- reading -------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's `${NAME:-default}` / `${NAME-default}` as the defaults (the environment of a
    checked file is unknown), `${NAME:?message}` and `${NAME}` as empty, recursively."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", value).replace("$$", "$")
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@dataclass
class Deployment:
    """The files of docker/ that refer to each other, parsed."""

    compose: dict[str, Any]
    prometheus: dict[str, Any]
    datasources: dict[str, Any]
    dashboards: dict[str, Any]
    sentinel_conf: str
    haproxy_cfg: str
    base: Path = DOCKER  # where the compose file's relative paths start

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return self.compose["services"]


def read_deployment() -> Deployment:
    return Deployment(
        compose=interpolate(load_yaml(COMPOSE)),
        prometheus=load_yaml(PROMETHEUS / "prometheus.yml"),
        datasources=load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"),
        dashboards=load_yaml(GRAFANA / "provisioning" / "dashboards" / "marketstream.yaml"),
        sentinel_conf=(DOCKER / "redis" / "sentinel.conf").read_text(),
        haproxy_cfg=HAPROXY_CFG.read_text(),
    )


def is_ours(service: dict[str, Any]) -> bool:
    """Built from docker/Dockerfile: it runs the project's code."""
    return "build" in service


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as service -> condition (the list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume, short or long syntax."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        out.append((source, target))
    return out


def bind_path(base: Path, source: str) -> Path | None:
    """The host path of a bind mount, None for a named volume."""
    return (base / source).resolve() if source.startswith((".", "/")) else None


def argument(argv: list[str], option: str) -> str | None:
    """The value after `option` in argv, or None."""
    return argv[argv.index(option) + 1] if option in argv[:-1] else None


def dockerfile_healthcheck() -> bool:
    return any(i.startswith("HEALTHCHECK ") and "NONE" not in i for i in instructions(DOCKERFILE.read_text()))


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable") and check.get("test") not in (None, ["NONE"])
    return is_ours(service) and dockerfile_healthcheck()


# -- the project's commands ----------------------------------------------------------------


@functools.cache
def run_here(argv: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> tuple[int, str]:
    """`python ARGV` run here, as the image would run it, in the service's environment: (exit code, output)."""
    run = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "marketstream.settings"}
        | dict(env),
    )
    return run.returncode, run.stdout + run.stderr


def module_exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return module.split(".")[0] in PRODUCT and (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file())


def management_commands() -> set[str]:
    code, text = run_here(("manage.py", "help", "--commands"), ())
    assert code == 0, text
    return set(text.split())


def command_problems(where: str, argv: list[str], env: dict[str, str]) -> list[str]:
    """A command of our image: `python -m MODULE ...` or `python manage.py COMMAND ...`, whose
    module or command exists and whose every `--option` its `--help` lists."""
    if len(argv) < 3 or argv[0] != "python":
        return [f"{where}: {argv} is neither `python -m MODULE` nor `python manage.py COMMAND`"]
    if argv[1] == "-m":
        if not module_exists(argv[2]):
            return [f"{where}: module {argv[2]} is not in the project"]
        program = ("-m", argv[2])
    elif argv[1] == "manage.py":
        if argv[2] not in management_commands():
            return [f"{where}: manage.py has no command {argv[2]!r}"]
        program = ("manage.py", argv[2])
    else:
        return [f"{where}: {argv} is neither `python -m MODULE` nor `python manage.py COMMAND`"]
    code, text = run_here((*program, "--help"), tuple(sorted(env.items())))
    if code != 0:
        return [f"{where}: `{' '.join(program)} --help` failed in the service's environment:\n{text[-2000:]}"]
    listed = set(re.findall(r"--[a-z][a-z0-9-]*", text))
    return [
        f"{where}: {' '.join(program)} has no option {o}" for o in argv[3:] if o.startswith("--") and o not in listed
    ]


@functools.cache
def settings_documented() -> set[str]:
    """Environment variables the README's settings table names (a row of its own, or in the row of
    the setting it goes with, as MARKETSTREAM_METRICS_HOST with MARKETSTREAM_METRICS_PORT)."""
    table = (ROOT / "README.md").read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))


@functools.cache
def product_code() -> str:
    return "".join(p.read_text() for part in PRODUCT for p in sorted((ROOT / part).rglob("*.py")))


def setting_problems(where: str, names: list[str]) -> list[str]:
    problems = []
    for name in names:
        if name in RUNTIME_VARIABLES:
            continue
        if name not in settings_documented():
            problems.append(f"{where}: {name} is not in the README's settings table")
        if not re.search(rf"""["']{name}["']""", product_code()):
            problems.append(f"{where}: no code of the product reads {name}")
    return problems


# -- the checks ----------------------------------------------------------------------------


def service_problems(d: Deployment) -> list[str]:
    """depends_on, files, build context, and for our image its commands and settings."""
    problems = []
    declared = set(d.compose.get("volumes") or {})
    for name, service in d.services.items():
        for dep, condition in dependencies(service).items():
            if dep not in d.services:
                problems.append(f"{name}: depends on {dep}, which is not a service")
                continue
            if condition not in CONDITIONS:
                problems.append(f"{name}: depends on {dep} with an unknown condition {condition!r}")
            if condition == "service_healthy" and not has_healthcheck(d.services[dep]):
                problems.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
            if condition == "service_completed_successfully" and d.services[dep].get("restart", "no") != "no":
                problems.append(f"{name}: waits for {dep} to complete, but {dep} restarts")
        for source, target in mounts(service):
            path = bind_path(d.base, source)
            if path is None and source not in declared:
                problems.append(f"{name}: volume {source!r} is not declared under `volumes:`")
            if path is not None and not path.exists():
                problems.append(f"{name}: mounts {source} on {target}, which does not exist")
        if "build" in service:
            context = (d.base / service["build"]["context"]).resolve()
            dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            elif not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
        if not is_ours(service):
            continue
        env = environment(service)
        problems += setting_problems(name, list(env))
        if "command" in service:
            problems += command_problems(f"{name} command", list(service["command"]), env)
        test = (service.get("healthcheck") or {}).get("test")
        if test and test[0] == "CMD":
            problems += command_problems(f"{name} healthcheck", list(test[1:]), env)
        elif test and test != ["NONE"]:
            problems.append(f"{name}: healthcheck {test} is not an exec form (CMD) command of the project")
    return problems


def commands(d: Deployment, module: str) -> dict[str, list[str]]:
    """Service -> its command, for the services of our image that run `module` (or manage.py command)."""
    return {
        name: list(s["command"]) for name, s in d.services.items() if is_ours(s) and module in s.get("command", [])[:3]
    }


def proxy_problems(d: Deployment) -> list[str]:
    """One proxy, mounting the cluster suite's haproxy.cfg, with the variables it reads, pointing at hubs."""
    proxies = {n: s for n, s in d.services.items() if any(t == HAPROXY_TARGET for _, t in mounts(s))}
    if len(proxies) != 1:
        return [f"expected one service mounting {HAPROXY_TARGET}, found {sorted(proxies)}"]
    ((name, proxy),) = proxies.items()
    problems = []
    source = next(s for s, t in mounts(proxy) if t == HAPROXY_TARGET)
    if bind_path(d.base, source) != HAPROXY_CFG:
        problems.append(f"{name}: mounts {source}, not the cluster suite's {HAPROXY_CFG.relative_to(ROOT)}")
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", d.haproxy_cfg))
    required = set(re.findall(r"\$\{([A-Z0-9_]+)\}", d.haproxy_cfg))
    env = environment(proxy)
    problems += [f"{name}: {v} is not a variable haproxy.cfg reads" for v in sorted(set(env) - read)]
    problems += [f"{name}: haproxy.cfg needs {v}" for v in sorted(required - set(env))]
    hubs = commands(d, "marketstream.serve")
    for variable in sorted(required):
        host, _, port = env.get(variable, ":").rpartition(":")
        if host not in hubs:
            problems.append(f"{name}: {variable}={env.get(variable)} is not a hub of this file ({sorted(hubs)})")
        elif argument(hubs[host], "--port") != port:
            problems.append(
                f"{name}: {variable}={env.get(variable)}, but {host} serves on {argument(hubs[host], '--port')}"
            )
    missing = set(hubs) - {env.get(v, ":").rpartition(":")[0] for v in required}
    problems += [f"{name}: hub {h} is not behind the proxy" for h in sorted(missing)]
    return problems


def redis_problems(d: Deployment) -> list[str]:
    """REDIS_URL: the same in every service of ours; two shards, one Sentinel-managed, all run here."""
    urls = {environment(s).get("REDIS_URL") for s in d.services.values() if is_ours(s)}
    if len(urls) != 1 or None in urls:
        return [f"REDIS_URL must be set, and the same, in every service of the image: {urls}"]
    (url,) = urls
    assert url is not None
    try:
        shards = parse_urls(url)
    except ValueError as exc:
        return [f"REDIS_URL {url!r} does not parse: {exc}"]
    problems = []
    if len(shards) != 2 or [s.sentinel for s in shards] != [False, True]:
        problems.append(f"REDIS_URL {url!r}: expected a plain shard 0 and a Sentinel-managed shard 1")
    monitored = dict(re.findall(r"^sentinel monitor (\S+) (\S+) \d+ \d+$", d.sentinel_conf, re.M))
    for shard in shards:
        hosts = [h for h, _ in shard.sentinels] or [urlsplit(shard.url).hostname or ""]
        for host in hosts:
            if host not in d.services:
                problems.append(f"REDIS_URL shard {shard.index}: {host} is not a service")
            elif shard.sentinel and "--sentinel" not in " ".join(d.services[host].get("command", [])):
                problems.append(f"REDIS_URL shard {shard.index}: {host} does not run a Sentinel")
        if shard.sentinel and shard.service not in monitored:
            problems.append(
                f"REDIS_URL shard {shard.index}: the Sentinel monitors {sorted(monitored)}, not {shard.service}"
            )
    for service, host in monitored.items():
        if host not in d.services:
            problems.append(f"sentinel.conf: {service}'s primary {host} is not a service")
    return problems


def metrics_ports(d: Deployment) -> dict[str, str]:
    """Service -> port of its metrics listener, when other containers reach it (on
    MARKETSTREAM_METRICS_HOST 0.0.0.0): a hub's MARKETSTREAM_METRICS_PORT, a feed's
    --metrics-port (or MARKETSTREAM_FEED_METRICS_PORT)."""
    ports = {}
    for name, argv in (commands(d, "marketstream.serve") | commands(d, "runfeed")).items():
        env = environment(d.services[name])
        if "runfeed" in argv:
            port = argument(argv, "--metrics-port") or env.get("MARKETSTREAM_FEED_METRICS_PORT")
        else:
            port = env.get("MARKETSTREAM_METRICS_PORT")
        if port and port != "0" and env.get("MARKETSTREAM_METRICS_HOST") == "0.0.0.0":
            ports[name] = port
    return ports


def prometheus_problems(d: Deployment) -> list[str]:
    """Prometheus scrapes every hub and feed on its metrics port, loads alerts.yml from the folder
    compose mounts, and Grafana reads from it and loads the dashboards folder compose mounts."""
    problems = []
    exposed = metrics_ports(d)
    runs = set(commands(d, "marketstream.serve")) | set(commands(d, "runfeed"))
    scraped = set()
    for job in d.prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                scraped.add(host)
                if host not in d.services:
                    problems.append(f"prometheus.yml: job {job['job_name']} scrapes {host}, not a service")
                elif exposed.get(host) != port:
                    problems.append(f"prometheus.yml: {target}, but {host} serves metrics on {exposed.get(host)}")
    problems += [f"prometheus.yml: {name} is not scraped" for name in sorted(runs - scraped)]
    mounted = {target: bind_path(d.base, source) for s in d.services.values() for source, target in mounts(s)}
    if mounted.get("/etc/prometheus") != PROMETHEUS:
        problems.append("compose: no service mounts docker/prometheus on /etc/prometheus")
    (source,) = d.datasources["datasources"]
    url = urlsplit(source["url"])
    if url.hostname not in d.services or url.port != PROMETHEUS_PORT:
        problems.append(f"grafana datasource: {source['url']} is not compose's Prometheus")
    (provider,) = d.dashboards["providers"]
    if mounted.get(provider["options"]["path"]) != GRAFANA / "dashboards":
        problems.append(f"grafana dashboards: {provider['options']['path']} is not where compose mounts them")
    if mounted.get("/etc/grafana/provisioning") != GRAFANA / "provisioning":
        problems.append("compose: no service mounts docker/grafana/provisioning on /etc/grafana/provisioning")
    return problems


def deployment_problems(d: Deployment) -> list[str]:
    return service_problems(d) + proxy_problems(d) + redis_problems(d) + prometheus_problems(d)


# -- the Dockerfile ------------------------------------------------------------------------


def instructions(text: str) -> list[str]:
    """One line per instruction: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def ignored(path: str, dockerignore: str) -> bool:
    """Whether .dockerignore (patterns anchored at the context root; no `!` exceptions used) drops `path`."""
    for pattern in dockerignore.splitlines():
        pattern = pattern.strip().rstrip("/")
        if not pattern or pattern.startswith("#"):
            continue
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts))):
            return True
    return False


def dockerfile_problems(text: str, dockerignore: str, context: Path = ROOT) -> list[str]:
    """Two stages; the builder copies what the wheel needs, from files that exist and are not
    ignored; the runtime stage installs no compiler, runs as a non-root USER, has a HEALTHCHECK
    and a CMD that run modules of the project."""
    problems = []
    lines = instructions(text)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines), re.M))
    stages: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("FROM "):
            words = line.split()
            stages.append((words[3] if len(words) > 3 and words[2].upper() == "AS" else "", []))
            stages[-1][1].append(re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), line))
        elif stages:
            stages[-1][1].append(line)
    if len(stages) != 2 or not stages[0][0]:
        return [f"expected two stages, a named builder and the runtime: {[n for n, _ in stages]}"]
    (builder, build), (_, runtime) = stages
    if runtime[0] != "FROM python:3.11-slim":
        problems.append(f"the runtime stage is {runtime[0]!r}, not python:3.11-slim")
    copied = set()
    for line in build + runtime:
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        for source in line.split()[1:-1]:
            copied.add(source)
            if not (context / source).exists():
                problems.append(f"COPY {source}: no such file in the build context")
            elif ignored(source, dockerignore):
                problems.append(f"COPY {source}: .dockerignore leaves it out of the build context")
    project = load_toml(context / "pyproject.toml")
    needed = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]} | {"pyproject.toml"}
    needed.add(project["project"]["readme"])
    problems += [f"the builder does not copy {n}, which the wheel needs" for n in sorted(needed - copied)]
    for line in runtime:
        if line.startswith("COPY --from=") and line.split()[1].removeprefix("--from=") != builder:
            problems.append(f"{line!r}: no stage of that name")
        if line.startswith("RUN ") and COMPILERS.search(line):
            problems.append(f"the runtime stage installs a compiler: {line!r}")
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the runtime stage must end as a non-root USER, has {users}")
    for kind in ("HEALTHCHECK", "CMD"):
        found = [line for line in runtime if line.startswith(f"{kind} ")]
        exec_form = re.search(r"\[(.*)\]$", found[-1]) if found else None
        if exec_form is None:
            problems.append(f"the runtime stage has no {kind} in exec form")
            continue
        argv = [w.strip().strip('"') for w in exec_form.group(1).split(",")]
        if argv[:2] != ["python", "-m"] or not module_exists(argv[2]):
            problems.append(f"{kind} {argv} does not run a module of the project")
    return problems


def load_toml(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())


# -- tests ---------------------------------------------------------------------------------


def test_the_compose_file_holds_together_with_the_project() -> None:
    assert deployment_problems(read_deployment()) == []
    # and where Docker has its compose plugin (not on this project's machines so far), compose agrees
    docker = shutil.which("docker")
    if docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        run = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr


def test_the_proxy_file_is_the_one_the_cluster_suite_runs() -> None:
    assert HAPROXY_CFG == DOCKER / "haproxy.cfg" and HAPROXY_CFG.is_file()


def haproxy_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`haproxy -c` of the proxy file in `env` (Debian's HAProxy, as the cluster suite runs it)."""
    if not Path(HAPROXY).exists():
        pytest.fail(f"{HAPROXY} is missing: `apt-get install -y haproxy` as root (or `make {HAPROXY}`)")
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(HAPROXY_CFG)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/sbin:/usr/bin:/bin", **env},
    )


def test_haproxy_accepts_its_file_in_the_proxy_services_environment() -> None:
    proxy = read_deployment().services["proxy"]
    run = haproxy_check(environment(proxy))
    assert run.returncode == 0, run.stdout + run.stderr


def test_haproxy_refuses_its_file_without_a_hub_address() -> None:
    env = environment(read_deployment().services["proxy"])
    del env["HUB2_ADDR"]
    run = haproxy_check(env)
    assert run.returncode != 0 and "'server' expects <name> and <addr>" in run.stdout + run.stderr


def test_the_image_is_two_stage_non_root_with_a_healthcheck() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), (ROOT / ".dockerignore").read_text()) == []


def _set(path: list[str], value: Any) -> Callable[[Deployment], None]:
    def mutate(d: Deployment) -> None:
        node: Any = d.compose
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _edit(field: str, old: str, new: str) -> Callable[[Deployment], None]:
    def mutate(d: Deployment) -> None:
        text = getattr(d, field)
        assert old in text, f"{old!r} not in {field}"
        setattr(d, field, text.replace(old, new))

    return mutate


def _prometheus_target(target: str) -> Callable[[Deployment], None]:
    def mutate(d: Deployment) -> None:
        d.prometheus["scrape_configs"][0]["static_configs"][0]["targets"] = [target]

    return mutate


def _hub_env(name: str, value: str) -> Callable[[Deployment], None]:
    def mutate(d: Deployment) -> None:
        d.services["hub1"]["environment"][name] = value

    return mutate


def _all_env(name: str, value: str) -> Callable[[Deployment], None]:
    def mutate(d: Deployment) -> None:
        for service in d.services.values():
            if is_ours(service):
                service["environment"][name] = value

    return mutate


BROKEN_DEPLOYMENTS: dict[str, tuple[Callable[[Deployment], None], str]] = {
    "unknown dependency": (_set(["services", "hub1", "depends_on", "redis9"], {}), "redis9, which is not a service"),
    "unknown condition": (
        _set(["services", "hub1", "depends_on", "redis0"], {"condition": "service_ready"}),
        "unknown condition",
    ),
    "healthy without healthcheck": (
        _set(["services", "grafana", "depends_on", "proxy"], {"condition": "service_healthy"}),
        "proxy to be healthy, which has no healthcheck",
    ),
    "migrate restarts": (_set(["services", "migrate", "restart"], "always"), "but migrate restarts"),
    "missing file": (
        _set(["services", "sentinel", "volumes"], ["./redis/sentinel.cnf:/etc/marketstream/sentinel.conf:ro"]),
        "does not exist",
    ),
    "undeclared volume": (_set(["services", "redis0", "volumes"], ["redis9-data:/data"]), "is not declared"),
    "missing context": (_set(["services", "feed", "build"], {"context": "../nowhere"}), "build context"),
    "missing dockerfile": (
        _set(["services", "feed", "build"], {"context": "..", "dockerfile": "docker/Dockerfile.old"}),
        "Dockerfile",
    ),
    "unknown module": (
        _set(["services", "hub1", "command"], ["python", "-m", "marketstream.server", "--port", "8000"]),
        "module marketstream.server is not in the project",
    ),
    "not a project command": (_set(["services", "feed", "command"], ["uvicorn", "x:app"]), "neither"),
    "unknown manage.py command": (
        _set(["services", "feed", "command"], ["python", "manage.py", "runfeeds"]),
        "no command 'runfeeds'",
    ),
    "unknown option": (
        _set(["services", "feed", "command"], ["python", "manage.py", "runfeed", "--metric-port", "9101"]),
        "has no option --metric-port",
    ),
    "unknown hub option": (
        _set(["services", "hub1", "command"], ["python", "-m", "marketstream.serve", "--threads", "2"]),
        "has no option --threads",
    ),
    "healthcheck of another module": (
        _set(["services", "feed", "healthcheck"], {"test": ["CMD", "python", "-m", "marketstream.health"]}),
        "module marketstream.health is not in the project",
    ),
    "unknown setting": (_hub_env("MARKETSTREAM_MAX_CLIENTS", "5"), "MARKETSTREAM_MAX_CLIENTS is not in the README"),
    "proxy mounts another file": (
        _set(["services", "proxy", "volumes"], ["./compose.yaml:/usr/local/etc/haproxy/haproxy.cfg:ro"]),
        "not the cluster suite's docker/haproxy.cfg",
    ),
    "no proxy": (_set(["services", "proxy", "volumes"], []), "expected one service mounting"),
    "proxy variable it does not read": (
        _set(["services", "proxy", "environment", "PROXY_TIMEOUT"], "1h"),
        "PROXY_TIMEOUT is not a variable haproxy.cfg reads",
    ),
    "proxy to a service that is not a hub": (
        _set(["services", "proxy", "environment", "HUB2_ADDR"], "feed:8000"),
        "HUB2_ADDR=feed:8000 is not a hub",
    ),
    "proxy to the wrong port": (_set(["services", "proxy", "environment", "HUB1_ADDR"], "hub1:8080"), "serves on"),
    "proxy variable missing": (
        lambda d: d.services["proxy"]["environment"].pop("HUB2_ADDR"),
        "haproxy.cfg needs HUB2_ADDR",
    ),
    "REDIS_URL differs": (_hub_env("REDIS_URL", "redis://redis0:6379/0"), "the same, in every service"),
    "REDIS_URL to a missing host": (
        _all_env("REDIS_URL", "redis://redis9:6379/0,redis+sentinel://sentinel:26379/shard1"),
        "redis9 is not a service",
    ),
    "REDIS_URL without Sentinel": (
        _all_env("REDIS_URL", "redis://redis0:6379/0,redis://redis1:6379/0"),
        "Sentinel-managed shard 1",
    ),
    "REDIS_URL names another Sentinel service": (
        _all_env("REDIS_URL", "redis://redis0:6379/0,redis+sentinel://sentinel:26379/mymaster"),
        "not mymaster",
    ),
    "REDIS_URL's Sentinel is a plain Redis": (
        _all_env("REDIS_URL", "redis://redis0:6379/0,redis+sentinel://redis1:26379/shard1"),
        "redis1 does not run a Sentinel",
    ),
    "Sentinel monitors a missing host": (
        _edit("sentinel_conf", "monitor shard1 redis1 ", "monitor shard1 redis2 "),
        "primary redis2 is not a service",
    ),
    "scrape of a missing service": (_prometheus_target("hub3:9100"), "hub3, not a service"),
    "scrape of the wrong port": (_prometheus_target("hub1:8000"), "serves metrics on 9100"),
    "a hub not scraped": (_prometheus_target("hub1:9100"), "hub2 is not scraped"),
    "metrics only on loopback": (_hub_env("MARKETSTREAM_METRICS_HOST", "127.0.0.1"), "serves metrics on None"),
    "feed metrics only on loopback": (
        _set(["services", "feed", "environment", "MARKETSTREAM_METRICS_HOST"], "127.0.0.1"),
        "but feed serves metrics on None",
    ),
    "Prometheus without its files": (
        _set(["services", "prometheus", "volumes"], ["./grafana:/etc/prometheus:ro"]),
        "docker/prometheus on /etc/prometheus",
    ),
    "Grafana's datasource elsewhere": (
        lambda d: d.datasources["datasources"][0].update(url="http://prom:9090"),
        "is not compose's Prometheus",
    ),
    "Grafana's dashboards elsewhere": (
        lambda d: d.dashboards["providers"][0]["options"].update(path="/etc/dashboards"),
        "not where compose mounts them",
    ),
}


@pytest.mark.parametrize("broken", list(BROKEN_DEPLOYMENTS))
def test_a_broken_compose_file_is_caught(broken: str) -> None:
    mutate, expected = BROKEN_DEPLOYMENTS[broken]
    deployment = copy.deepcopy(read_deployment())
    mutate(deployment)
    problems = deployment_problems(deployment)
    assert any(expected in p for p in problems), f"{broken}: expected a problem with {expected!r}, got {problems}"


BROKEN_IMAGES: dict[str, tuple[str, str, str]] = {  # (old text, new text, problem)
    "runs as root": ("USER 10001:10001", "USER root", "non-root USER"),
    "no USER": ("USER 10001:10001\n", "", "non-root USER"),
    "no HEALTHCHECK": ("HEALTHCHECK --interval", "# HEALTHCHECK --interval", "no HEALTHCHECK"),
    "HEALTHCHECK of another program": (
        '"-m", "marketstream.healthcheck"]',
        '"-m", "marketstream.healthz"]',
        "HEALTHCHECK ['python', '-m', 'marketstream.healthz'] does not run",
    ),
    "COPY of a missing file": ("COPY manage.py ./", "COPY manage.py setup.cfg ./", "COPY setup.cfg: no such file"),
    "a package not copied": ("COPY loadtest loadtest\n", "", "does not copy loadtest"),
    "a compiler in the runtime": (
        "RUN groupadd",
        "RUN apt-get update && apt-get install -y gcc && groupadd",
        "installs a compiler",
    ),
    "one stage": ("FROM ${PYTHON_IMAGE} AS builder", "FROM ${PYTHON_IMAGE}", "expected two stages"),
    "another base": ("ARG PYTHON_IMAGE=python:3.11-slim", "ARG PYTHON_IMAGE=python:3.11", "not python:3.11-slim"),
    "copy from no stage": ("COPY --from=builder", "COPY --from=build", "no stage of that name"),
}


@pytest.mark.parametrize("broken", list(BROKEN_IMAGES))
def test_a_broken_dockerfile_is_caught(broken: str) -> None:
    old, new, expected = BROKEN_IMAGES[broken]
    text = DOCKERFILE.read_text()
    assert old in text, f"{broken}: {old!r} is not in the Dockerfile any more"
    problems = dockerfile_problems(text.replace(old, new), (ROOT / ".dockerignore").read_text())
    assert any(expected in p for p in problems), f"{broken}: expected {expected!r}, got {problems}"


def test_a_dockerignore_that_drops_a_copied_folder_is_caught() -> None:
    dockerignore = (ROOT / ".dockerignore").read_text() + "\nfeeds\n"
    problems = dockerfile_problems(DOCKERFILE.read_text(), dockerignore)
    assert problems == ["COPY feeds: .dockerignore leaves it out of the build context"]


# -- Prometheus: promtool ------------------------------------------------------------------


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail(f"{PROMTOOL} is missing: `apt-get install -y prometheus` as root (or `make /usr/bin/promtool`)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_accepts_the_prometheus_config_and_rules() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_the_alert_rules_pass_their_unit_tests() -> None:
    run = promtool("test", "rules", "alerts.test.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def alert_names() -> set[str]:
    return {r["alert"] for g in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]}


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = load_yaml(PROMETHEUS / "alerts.test.yml")["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert firing == alert_names() and quiet == alert_names()


BROKEN_RULES = {  # changes to alerts.yml that its unit tests must catch
    "threshold": ("marketstream_feed_lag_seconds) > 1", "marketstream_feed_lag_seconds) > 5"),
    "for": ("for: 30s", "for: 5m"),
    "aggregation": ("sum by (job, instance, reason)", "sum by (job, instance)"),
    "label": ('code="1013"', 'code="1012"'),
    "severity": (
        'labels: {severity: critical}\n        annotations:\n          summary: "shard',
        'labels: {severity: warning}\n        annotations:\n          summary: "shard',
    ),
    "metric name": ("marketstream_ticks_lost_total", "marketstream_ticks_lost"),
}


@pytest.mark.parametrize("broken", list(BROKEN_RULES))
def test_a_broken_alert_rule_fails_its_unit_tests(broken: str, tmp_path: Path) -> None:
    old, new = BROKEN_RULES[broken]
    rules = (PROMETHEUS / "alerts.yml").read_text()
    assert old in rules, f"{broken}: {old!r} is not in alerts.yml any more"
    (tmp_path / "alerts.yml").write_text(rules.replace(old, new))
    shutil.copy(PROMETHEUS / "alerts.test.yml", tmp_path)
    run = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert run.returncode != 0 and "FAILED" in run.stdout + run.stderr, run.stdout
