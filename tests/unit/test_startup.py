"""What a task process imports: the start-up measures keep holding (checked in fresh processes).

Each check runs in its own interpreter, since the test session has long imported everything.
They assert which modules a stage loads and that the libraries still behave, never timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from include.mlops.core.settings import PROJECT_ROOT

_VALIDATE_TWO_DAYS = """
import datetime as dt, json, sys
import pyarrow as pa
from include.devtools.simulator import SimulationConfig, transactions_for_day
from include.mlops.core.schema import TRANSACTIONS
from include.mlops.ingest import defer_unused_modules, to_frame, validate

def stats_loaded():
    return sorted(m for m in sys.modules if m.startswith("scipy.stats."))

facts = {"before": stats_loaded(), "deferred": defer_unused_modules()}
day = dt.date(2026, 1, 5)
good = transactions_for_day(day, SimulationConfig(seed=7, rows_per_day=300))
amounts = good.column("amount").to_pylist()
amounts[3] = -5.0
amounts[9] = None
field = pa.field("amount", pa.float64(), nullable=True)
bad = good.set_column(good.schema.get_field_index("amount"), field, pa.array(amounts, pa.float64()))
passed = validate(to_frame(good), TRANSACTIONS, day, [300])
failed = validate(to_frame(bad), TRANSACTIONS, day, [300])
facts.update(
    passed=passed.success,
    failures=sorted((o.expectation, o.unexpected_count) for o in failed.failures),
    pages="docs/index.html" in failed.files and "docs/index.html" in passed.files,
    after_validation=stats_loaded(),
    again=defer_unused_modules(),
    others=sorted({m.split(".")[0] for m in sys.modules} & {"evidently", "feast", "mlflow", "sklearn"}),
)
# Used at last: the deferred module loads as usual, and GX sees the same module.
from scipy.stats import entropy
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
facts.update(entropy=float(entropy([0.5, 0.5], base=2)), same=kl.stats.entropy is entropy)
print(json.dumps(facts))
"""


def _facts(code: str) -> dict:
    """Run ``code`` in a fresh interpreter at the project root; the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_validating_a_good_and_a_bad_day_never_loads_scipy_stats() -> None:
    facts = _facts(_VALIDATE_TWO_DAYS)
    assert facts["before"] == [], "scipy.stats is loaded before GX: this check needs a process without it"
    assert facts["deferred"] == ["scipy.stats"]
    # The suite still does its work: the good day passes, the bad one fails on exactly its two rows.
    assert facts["passed"] is True
    assert facts["failures"] == [
        ["expect_column_values_to_be_between", 1],
        ["expect_column_values_to_not_be_null", 1],
    ]
    assert facts["pages"] is True
    assert facts["after_validation"] == [], "GX loaded scipy.stats: the deferral no longer saves anything"
    assert facts["again"] == []
    assert facts["others"] == []
    assert facts["entropy"] == 1.0
    assert facts["same"] is True


def test_a_module_imported_before_is_not_deferred() -> None:
    facts = _facts(
        """
        import json, types, scipy.stats
        from include.mlops.ingest import defer_unused_modules
        deferred = defer_unused_modules()
        print(json.dumps({"deferred": deferred, "plain": type(scipy.stats) is types.ModuleType,
                          "works": float(scipy.stats.norm.cdf(0.0))}))
        """
    )
    assert facts == {"deferred": [], "plain": True, "works": 0.5}


def test_feast_is_imported_without_typeguards_instrumentation() -> None:
    # With typeguard's instrumentation a str argument given an int raises TypeCheckError; the
    # instrumentation is what cost seconds at import, so its check is the sign that it is off.
    facts = _facts(
        """
        import json
        from include.mlops.features.store import quiet_feast_import
        quiet_feast_import()
        from feast import Field
        from feast.types import Int64
        print(json.dumps({"name": Field(name=123, dtype=Int64).name}))
        """
    )
    assert facts == {"name": 123}
