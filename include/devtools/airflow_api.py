"""A small client of the Airflow 3 REST API (``/api/v2``), for the demo and the end-to-end tests.

Uses only the standard library. Authenticates with the simple auth manager's ``/auth/token``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class AirflowAPIError(RuntimeError):
    """The API answered with an error status."""

    def __init__(self, status: int, method: str, path: str, body: str):
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status


class AirflowClient:
    """Calls ``/api/v2`` with a bearer token, retrying the transient errors SQLite can produce."""

    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        for attempt in range(5):
            req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    text = resp.read().decode()
                    return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                text = exc.read().decode(errors="replace")
                # SQLite answers "database is locked" as a 500 under concurrent writes: retry.
                if exc.code >= 500 and attempt < 4:
                    time.sleep(1 + attempt)
                    continue
                raise AirflowAPIError(exc.code, method, path, text) from None
        raise AssertionError("unreachable")

    def token(self) -> str:
        if self._token is None:
            answer = self._request(
                "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
            )
            self._token = answer["access_token"]
        return self._token

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._request("PATCH", path, body)

    # -- helpers -------------------------------------------------------------------------------

    def dag_ids(self) -> list[str]:
        return [d["dag_id"] for d in self.get("/api/v2/dags?limit=100")["dags"]]

    def import_errors(self) -> list[dict]:
        return self.get("/api/v2/importErrors")["import_errors"]

    def unpause(self, dag_id: str) -> None:
        self.set_paused(dag_id, False)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=500&order_by=run_after")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances"
        return self.get(path)["task_instances"]

    def trigger(self, dag_id: str, partition_key: str | None = None, conf: dict | None = None) -> dict:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if partition_key is not None:
            body["partition_key"] = partition_key
        return self.post(f"/api/v2/dags/{dag_id}/dagRuns", body)

    def backfill(self, dag_id: str, from_date: str, to_date: str, reprocess: str = "completed") -> dict:
        """Create a backfill; retries while a just-finished one still blocks it (HTTP 409)."""
        body = {
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "reprocess_behavior": reprocess,
            "max_active_runs": 4,
            "run_backwards": False,
            "dag_run_conf": {},
        }
        deadline = time.monotonic() + 90
        while True:
            try:
                return self.post("/api/v2/backfills", body)
            except AirflowAPIError as exc:
                if exc.status != 409 or time.monotonic() > deadline:
                    raise
                time.sleep(3)
