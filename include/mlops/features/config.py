"""Feast's configuration from the settings: which ``feature_store*.yaml``, and its variables.

Pure: no Feast, no I/O beyond the caller's. :mod:`.store` builds the store from them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from include.mlops.core.settings import Settings


def feast_redis_connection(url: str) -> str:
    """Feast's Redis connection string (``host:port,db=N,...``) from a ``redis://`` URL or itself.

    A value that is not a ``redis://`` or ``rediss://`` URL is taken to be in Feast's form already.
    """
    if not url.startswith(("redis://", "rediss://")):
        return url
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = parsed.path.strip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.username and parsed.username != "default":
        parts.append(f"username={parsed.username}")
    if parsed.scheme == "rediss" or parse_qs(parsed.query).get("ssl") == ["true"]:
        parts.append("ssl=true")
    return ",".join(parts)


def feature_store_yaml(settings: Settings | None = None) -> Path:
    """The configuration for the profile: ``feature_store.yaml`` or ``feature_store.cluster.yaml``."""
    s = resolve_settings(settings)
    name = "feature_store.cluster.yaml" if s.is_cluster else "feature_store.yaml"
    return Path(s.feast_repo) / name


def expand_variables(text: str, env: Mapping[str, str], source: Path) -> str:
    """``text`` with each ``${NAME}`` replaced by ``env[NAME]``; a name not in ``env`` is an error.

    ``source`` is the file the text comes from, for the error message.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ValueError(f"{source} refers to ${{{name}}}, which is not set")
        return env[name]

    return re.sub(r"\$\{(\w+)\}", value, text)
