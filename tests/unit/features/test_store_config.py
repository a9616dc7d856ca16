"""The Feast configuration derived from the settings, without Feast."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.mlops.core.settings import load_settings
from include.mlops.features import expand_variables, feast_redis_connection, feature_store, feature_store_yaml


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://cache", "cache:6379"),
        ("redis://:secret@cache:6380/3", "cache:6380,db=3,password=secret"),
        ("redis://default:secret@cache/1", "cache:6379,db=1,password=secret"),
        ("redis://alice:secret@cache/1", "cache:6379,db=1,password=secret,username=alice"),
        ("rediss://cache:6390/2", "cache:6390,db=2,ssl=true"),
        ("redis://cache/2?ssl=true", "cache:6379,db=2,ssl=true"),
        # Already in Feast's form: passed through unchanged.
        ("cache:6379,db=4", "cache:6379,db=4"),
    ],
)
def test_redis_urls_become_feasts_connection_strings(url: str, expected: str) -> None:
    assert feast_redis_connection(url) == expected


def test_variables_of_the_yaml_are_filled_and_an_unset_one_is_named() -> None:
    source = Path("feature_store.yaml")
    text = "path: ${MLOPS_FEAST_REGISTRY}\nonline: ${MLOPS_FEAST_ONLINE_PATH}/x $NOT_A_REFERENCE"
    env = {"MLOPS_FEAST_REGISTRY": "/r.db", "MLOPS_FEAST_ONLINE_PATH": "/o"}
    assert expand_variables(text, env, source) == "path: /r.db\nonline: /o/x $NOT_A_REFERENCE"
    unset = r"feature_store.yaml refers to \$\{MLOPS_REDIS_URL\}, which is not set"
    with pytest.raises(ValueError, match=unset):
        expand_variables("connection_string: ${MLOPS_REDIS_URL}", env, source)


def test_each_profile_has_its_own_feast_configuration(tmp_path: Path) -> None:
    embedded = load_settings({"MLOPS_HOME": str(tmp_path)})
    cluster = load_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_PROFILE": "cluster"})
    assert feature_store_yaml(embedded).name == "feature_store.yaml"
    assert feature_store_yaml(cluster).name == "feature_store.cluster.yaml"
    assert feature_store_yaml(embedded).is_file() and feature_store_yaml(cluster).is_file()


def test_the_embedded_registry_is_feasts_sql_registry_on_a_sqlite_file(tmp_path: Path) -> None:
    # A file registry is rewritten in place: a kill during the write left a 0-byte file that read
    # as an empty registry. The SQL registry commits every change as a SQLite transaction.
    import yaml

    s = load_settings({"MLOPS_HOME": str(tmp_path)})
    source = feature_store_yaml(s)
    env = {"MLOPS_FEAST_REGISTRY": s.feast_registry, "MLOPS_FEAST_ONLINE_PATH": s.feast_online_path}
    registry = yaml.safe_load(expand_variables(source.read_text(), env, source))["registry"]
    assert registry["registry_type"] == "sql"
    assert registry["path"] == f"sqlite:///{tmp_path}/feast/registry.sqlite"
    assert registry["sqlalchemy_config_kwargs"]["connect_args"]["timeout"] >= 30


def test_the_embedded_registry_setting_is_a_path_not_a_url(tmp_path: Path) -> None:
    s = load_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_FEAST_REGISTRY": "sqlite:////x/registry.sqlite"})
    with pytest.raises(ValueError, match="takes its path, not a URL"):
        feature_store(s)
