"""What can be checked of the image without a Docker engine: base, lock, project, user."""

from __future__ import annotations

import re
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


def test_the_project_is_copied_without_runtime_state():
    assert re.search(r"^COPY --chown=astro:0 \. \.$", DOCKERFILE, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".local", ".git", ".env"):
        assert path in ignored, f"{path} would be baked into the image"
    for needed in ("dags", "include", "plugins", "feature_repo", "requirements.txt"):
        assert needed not in ignored and (ROOT / needed).exists(), needed


def test_image_runs_as_non_root_with_the_project_importable():
    assert DOCKERFILE.rstrip().splitlines()[-1] == "USER astro"
    assert "PYTHONPATH=/usr/local/airflow" in DOCKERFILE
    assert (ROOT / "include" / "mlops" / "__main__.py").exists(), "the pod's entrypoint module"
