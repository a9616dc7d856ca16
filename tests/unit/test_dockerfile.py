"""What can be checked of the image without a Docker engine: base, lock, project, user."""

from __future__ import annotations

import posixpath
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _lock_version(package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert match, f"{package} is not pinned in requirements.txt"
    return match.group(1)


def _base_image() -> str:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.M))
    image = re.search(r"^FROM (\S+)", DOCKERFILE, re.M).group(1)
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


def test_base_image_is_astro_runtime_for_the_locked_airflow_minor():
    image = _base_image()
    match = re.fullmatch(r"astrocrpublic\.azurecr\.io/runtime:(\d+\.\d+)-(\d+)-python-(\d+\.\d+)-base", image)
    assert match, f"unexpected base image {image}"
    airflow_minor = ".".join(_lock_version("apache-airflow").split(".")[:2])
    assert match.group(1) == airflow_minor, f"runtime {match.group(1)} vs locked Airflow {airflow_minor}"
    requires = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert match.group(3) == requires, "image Python differs from the project's"


def test_the_lock_is_installed_and_checked_against_the_image_airflow():
    copy = DOCKERFILE.index("COPY --chown=astro:0 requirements.txt")
    install = DOCKERFILE.index("pip install --no-cache-dir --compile -r requirements.txt")
    assert copy < install
    assert "m.version('apache-airflow')" in DOCKERFILE[install:], "the image must assert its Airflow version"


def _dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """The rules of a ``.dockerignore`` as Docker reads them (moby ``ignorefile.ReadAll`` and
    ``patternmatcher``): comments and blank lines dropped, ``!`` marks an exception, the pattern is
    cleaned and made relative to the context root; ``**`` crosses directories, ``*`` and ``?`` do not."""
    rules = []
    for number, raw in enumerate(text.splitlines()):
        line = raw.removeprefix("\ufeff") if number == 0 else raw
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
        line = posixpath.normpath(line)
        if len(line) > 1 and line.startswith("/"):
            line = line.lstrip("/")
        regex, i = "", 0
        while i < len(line):
            ch = line[i]
            if line.startswith("**", i):
                i += 2
                if line.startswith("/", i):
                    i += 1
                regex += ".*" if i == len(line) else "(.*/)?"
                continue
            if ch == "*":
                regex += "[^/]*"
            elif ch == "?":
                regex += "[^/]"
            elif ch == "\\" and i + 1 < len(line):
                i += 1
                regex += re.escape(line[i])
            elif ch in "[]^-":
                regex += ch  # character classes pass through, as in Go's filepath.Match
            else:
                regex += re.escape(ch)
            i += 1
        rules.append((exception, re.compile(f"^{regex}$")))
    return rules


def _excluded(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves ``path`` out of the build context (``MatchesOrParentMatches``): the
    last rule that matches the path or one of its parent directories decides."""
    parent = posixpath.dirname(path) or "."
    parents = parent.split("/")
    excluded = False
    for exception, pattern in rules:
        if exception != excluded:
            continue  # an exception only matters once excluded, an exclusion only before
        match = bool(pattern.match(path))
        if not match and parent != ".":
            match = any(pattern.match("/".join(parents[: i + 1])) for i in range(len(parents)))
        if match:
            excluded = not exception
    return excluded


DOCKERIGNORE = _dockerignore_patterns((ROOT / ".dockerignore").read_text())

RUNTIME_STATE = (
    # MLOPS_HOME (.local/ by default): Airflow, Feast, MLflow, lake, reports, benchmarks.
    ".local/airflow/airflow.db",
    ".local/airflow/airflow.cfg",
    ".local/airflow/passwords.json",
    ".local/airflow/jwt_secret",
    ".local/airflow/logs/scheduler/latest/x.log",
    ".local/feast/registry.db",
    ".local/feast/online_store.db",
    ".local/mlflow/mlflow.db",
    ".local/mlflow/artifacts/1/abc/artifacts/model/model.pkl",
    ".local/lake/transactions/day=2024-01-01/part-0.parquet",
    ".local/bench/latest.json",
    # What the libraries create in the working directory when run from the project root.
    "mlruns/0/meta.yaml",
    "mlartifacts/1/abc/artifacts/model.pkl",
    "gx/uncommitted/x",
    "gx/uncommitted/data_docs/local_site/index.html",
    "feature_repo/data/registry.db",
    "feature_repo/data/online_store.db",
    "feature_repo/registry.db",
    "feature_repo/online_store.db",
    "airflow.db",
    "airflow.cfg",
    "webserver_config.py",
    "simple_auth_manager_passwords.json.generated",
    "logs/x.log",
    "logs/dag_id=train_model/run_id=x/task_id=train/attempt=1.log",
    "dags/logs/x.log",
    "include/mlruns/0/meta.yaml",
    "bench/results/latest.json",
    # Secrets and environments.
    ".env",
    ".env.local",
    "include/.env",
    "feature_repo/.env",
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/airflow/__init__.py",
    ".tools/bin/uv",
    ".git/config",
    # Caches.
    "include/mlops/__pycache__/lake.cpython-311.pyc",
    "dags/__pycache__/train_model.cpython-311.pyc",
    "tests/unit/__pycache__/test_dockerfile.cpython-311-pytest-9.2.0.pyc",
    ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/0.1.0/123",
)

SOURCES = (
    "dags/x.py",
    "include/mlops/lake.py",
    "include/mlops/__main__.py",
    "feature_repo/features.py",
    "feature_repo/feature_store.yaml",
    "feature_repo/feature_store.cluster.yaml",
    "plugins/mlops_reports.py",
    "requirements.txt",
    "pyproject.toml",  # read at run time for the model's code version
    "airflow_settings.yaml",
)


def test_the_dockerignore_matcher_follows_docker_rules():
    rules = _dockerignore_patterns("# c\n*\n!/keep\n**/drop\n!keep/drop/again\nx?.txt\n/abs/*.log\n")
    assert _excluded("anything", rules) and _excluded("dir/file", rules)  # `*` takes top-level entries
    assert not _excluded("keep/a/b.py", rules)  # an exception re-includes a directory's contents
    assert _excluded("keep/drop", rules) and _excluded("keep/a/drop/b", rules)  # `**` spans dirs
    assert not _excluded("keep/drop/again/f", rules)  # the last matching rule wins
    rules = _dockerignore_patterns("x?.txt\n/abs/*.log\n# not a rule\n")
    assert _excluded("x1.txt", rules) and not _excluded("x12.txt", rules) and not _excluded("d/x1.txt", rules)
    assert _excluded("abs/a.log", rules) and not _excluded("abs/d/a.log", rules)  # `*` stops at `/`
    assert not _excluded("# not a rule", rules)


def test_the_project_is_copied_without_runtime_state():
    assert re.search(r"^COPY --chown=astro:0 \. \.$", DOCKERFILE, re.M)
    leaked = [path for path in RUNTIME_STATE if not _excluded(path, DOCKERIGNORE)]
    assert not leaked, f"would be baked into the image: {leaked}"


def test_the_sources_are_in_the_build_context():
    missing = [path for path in SOURCES if _excluded(path, DOCKERIGNORE)]
    assert not missing, f"left out of the image: {missing}"
    tracked = subprocess.run(
        ["git", "ls-files", "dags", "include", "plugins", "feature_repo", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if tracked.returncode == 0:  # a checkout without git (an unpacked archive) has no list to check
        missing = [path for path in tracked.stdout.splitlines() if _excluded(path, DOCKERIGNORE)]
        assert not missing, f"tracked sources left out of the image: {missing}"


def test_image_runs_as_non_root_with_the_project_importable():
    users = [line for line in DOCKERFILE.splitlines() if line.startswith("USER ")]
    assert users and users[-1] == "USER astro", users
    assert "PYTHONPATH=/usr/local/airflow" in DOCKERFILE
    assert (ROOT / "include" / "mlops" / "__main__.py").exists(), "the pod's entrypoint module"
