"""The secret scan `make lint` runs (`make secrets`): it flags secrets, and the repository has none
that .secrets.baseline does not list as an audited false positive."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / ".secrets.baseline"
HOOK = Path(sys.executable).with_name("detect-secrets-hook")

# Fakes in the shape of real credentials, assembled here so that this file holds none of them.
FAKE_AWS_ACCESS_KEY = "AKIA" + "Q7XW3ZLMN2PR5TUV"
FAKE_AWS_SIGNING_KEY = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYz9QkLm3TnWpA"
FAKE_PRIVATE_KEY = (
    "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEAx3v9\n-----END RSA " + "PRIVATE KEY-----"
)


def _scan(files: list[str], tmp_path: Path, name: str = "baseline.json") -> subprocess.CompletedProcess:
    """The check of `make secrets`: the hook against a copy of the baseline (it rewrites its baseline
    when line numbers moved, which must not happen to the project's)."""
    baseline = tmp_path / name
    shutil.copyfile(BASELINE, baseline)
    return subprocess.run(
        [str(HOOK), "--no-verify", "--baseline", str(baseline), *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_lint_runs_the_secret_scan() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = re.search(r"^lint:([^#\n]*)", makefile, re.M)
    assert lint and "secrets" in lint.group(1).split(), "make lint must depend on make secrets"
    assert "detect-secrets-hook" in makefile and ".secrets.baseline" in makefile


def test_a_new_secret_is_flagged(tmp_path) -> None:
    leak = tmp_path / "settings.py"
    leak.write_text(
        f'AWS_ACCESS_KEY_ID = "{FAKE_AWS_ACCESS_KEY}"\n'
        f'aws_secret_access_key = "{FAKE_AWS_SIGNING_KEY}"\n'
        f'DEPLOY_KEY = """{FAKE_PRIVATE_KEY}"""\n'
    )
    result = _scan([str(leak)], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "AWS Access Key" in result.stdout
    assert "Private Key" in result.stdout
    assert "Secret Keyword" in result.stdout or "High Entropy" in result.stdout  # the secret key


def test_the_repository_has_no_secret_beyond_the_audited_baseline(tmp_path) -> None:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: no list of the project's files")
    files = [f for f in tracked.stdout.split("\0") if f and (ROOT / f).is_file()]
    chunks = [files[i :: os.cpu_count() or 1] for i in range(min(len(files), os.cpu_count() or 1))]
    with ThreadPoolExecutor(len(chunks)) as pool:
        results = list(
            pool.map(lambda i: _scan(chunks[i], tmp_path, f"baseline-{i}.json"), range(len(chunks)))
        )
    for result in results:
        # 3: nothing new, only line numbers of baselined findings moved.
        assert result.returncode in (0, 3), result.stdout + result.stderr

    baseline = json.loads(BASELINE.read_text())
    unaudited = [
        f"{finding['filename']}:{finding['line_number']} {finding['type']}"
        for findings in baseline["results"].values()
        for finding in findings
        if finding.get("is_secret") is not False
    ]
    assert not unaudited, f"findings not audited as false positives: {unaudited}"
