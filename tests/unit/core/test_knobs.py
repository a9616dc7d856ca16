"""Every setting is documented once, in its field, and the README's table is generated from it."""

from __future__ import annotations

import re

from include.mlops.core import knobs
from include.mlops.core.settings import PROJECT_ROOT, load_settings

BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme, "README.md lacks the settings table markers"
    table = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == knobs.markdown_table(), (
        "README.md's settings table is out of date: paste `python -m include.mlops settings --markdown`"
    )


def test_every_variable_the_code_reads_is_documented() -> None:
    documented = {variable for _, variable, _, _ in knobs.documented()}
    assert len(documented) == len(knobs.documented()), "a variable is documented twice"
    source = "\n".join(p.read_text() for p in (PROJECT_ROOT / "include" / "mlops").rglob("*.py"))
    read = set(re.findall(r"\"(MLOPS_[A-Z0-9_]+)\"", source))
    assert read <= documented, f"read but not documented: {sorted(read - documented)}"


def test_effective_values_hide_passwords(monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_LOCK_DATABASE_URL", "postgresql://mlops:s3cret@db:5432/locks")
    monkeypatch.setattr(knobs, "settings", lambda: load_settings())
    shown = knobs.effective()
    assert shown["pipeline"]["MLOPS_LOCK_DATABASE_URL"] == "postgresql://mlops:***@db:5432/locks"
    assert "s3cret" not in str(shown)
    assert set(shown) == set(knobs.CONCERNS)
