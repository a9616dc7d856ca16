"""Materialization from Arrow straight into the batched online stores, chosen by ``batch_engine: type:``.

Feast's local compute engine turns each batch of a materialization into protobuf objects, one
``Value`` per feature value, before the online store serializes them again: at a million payments a
day that conversion is a third of the materialization (``pd.isna`` and a ``Value`` per value).
:class:`ArrowWriteEngine` is that engine with one step changed: when the online store has an
``online_write_arrow`` method (the batched stores of :mod:`.online_stores`), the output step hands it
the Arrow batch, and :func:`encode_batch` builds the serialized values column by column. Everything
else (reading the offline store, the batches of ``online_write_batch_size`` rows, the registry's
materialization intervals, a store without the method) is Feast's own.

The bytes and texts are those Feast's conversion gives, by construction: the join keys and the
timestamps go through Feast's own functions; a ``Float64`` value is the protobuf encoding of
``double_val`` (tag and eight little-endian bytes, tested against protobuf); ``Int64`` and
``String`` values are serialized by protobuf once per distinct value; a null or NaN is an empty
``Value``, as Feast's ``pd.isnull`` makes it. A column of any other type, or one whose Arrow type
is not the plain one (an ``Int64`` column with nulls comes out of Arrow as floats), goes through
Feast's conversion.

Feast imports this module by the class path in ``feature_repo/feature_store*.yaml``; the pipeline
never imports it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from feast.infra.common.materialization_job import MaterializationJobStatus
from feast.infra.compute_engines.local.compute import LocalComputeEngine, LocalComputeEngineConfig
from feast.infra.compute_engines.local.feature_builder import LocalFeatureBuilder
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.compute_engines.local.nodes import LocalOutputNode
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.utils import (
    _build_entity_keys,
    _coerce_datetime,
    _columns_to_proto_values,
    _convert_arrow_to_proto,
    _validate_vector_field_lengths,
)
from feast.value_type import ValueType

if TYPE_CHECKING:
    import datetime as dt

    from feast import FeatureView
    from feast.infra.common.materialization_job import MaterializationTask
    from feast.infra.compute_engines.dag.context import ExecutionContext
    from feast.infra.compute_engines.local.arrow_table_value import ArrowTableValue
    from feast.infra.registry.base_registry import BaseRegistry
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

_MODULE = "include.mlops.features.arrow_write"

_DOUBLE = struct.Struct("<Bd")
_DOUBLE_TAG = 5 << 3 | 1
"""``Value.double_val``: field 5, wire type 1 (64-bit)."""


class ArrowWriteEngineConfig(LocalComputeEngineConfig):
    """Feast's local compute engine settings, selecting :class:`ArrowWriteEngine`."""

    type: Literal["include.mlops.features.arrow_write.ArrowWriteEngine"] = f"{_MODULE}.ArrowWriteEngine"  # type: ignore[assignment]


class ArrowWriteEngine(LocalComputeEngine):
    """Feast's local compute engine whose output step writes Arrow batches to a store that takes them."""

    def _materialize_one(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> LocalMaterializationJob:
        """Feast's ``LocalComputeEngine._materialize_one`` with :class:`_FeatureBuilder`."""
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        context = self.get_execution_context(registry, task)
        backend = self._get_backend(context)
        try:
            _FeatureBuilder(registry, task, backend=backend).build().execute(context)
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
        except Exception as error:  # Feast's engine reports a failure on the job, as here
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=error)


class _FeatureBuilder(LocalFeatureBuilder):
    """Feast's plan with :class:`_ArrowOutputNode` as its output step."""

    def build_output_nodes(self, view: Any, input_node: Any) -> Any:
        node = _ArrowOutputNode("output", self.dag_root.view, inputs=[input_node])
        self.nodes.append(node)
        return node


class _ArrowOutputNode(LocalOutputNode):
    """Feast's output step, handing each batch to ``online_write_arrow`` when the store has it."""

    def execute(self, context: ExecutionContext) -> ArrowTableValue:
        write = getattr(context.online_store, "online_write_arrow", None)
        if write is None or not self.feature_view.online:
            return super().execute(context)
        from feast.infra.compute_engines.local.arrow_table_value import ArrowTableValue

        table = self.get_single_table(context).data
        output = ArrowTableValue(data=table)
        context.node_outputs[self.name] = output
        if table.num_rows == 0:
            return output
        join_keys = {e.name: e.dtype.to_value_type() for e in self.feature_view.entity_columns}
        size = context.repo_config.materialization_config.online_write_batch_size
        for batch in [table] if size is None else table.to_batches(max_chunksize=size):
            write(context.repo_config, self.feature_view, batch, join_keys)
        if self.feature_view.offline:
            context.offline_store.offline_write_batch(
                config=context.repo_config,
                feature_view=self.feature_view,
                table=table,
                progress=lambda _: None,
            )
        return output


@dataclass(frozen=True)
class EncodedBatch:
    """One batch of a feature view as Feast's stores write it: per row, the entity key and the
    event and created times; per feature, each row's serialized ``Value`` and its text (Feast's
    ``value_text``: the string, or ``str`` of a number; ``None`` for a null)."""

    entity_keys: list[EntityKey]
    event_timestamps: list[dt.datetime]
    created_timestamps: list[dt.datetime | None]
    features: list[tuple[str, list[bytes], list[str | None]]]

    def __len__(self) -> int:
        return len(self.entity_keys)


def is_feature_view(view: Any) -> bool:
    """Whether Feast converts ``view``'s rows as a plain feature view (not an on-demand one)."""
    return (
        getattr(view, "source_request_sources", None) is None
        and getattr(view, "source_feature_view_projections", None) is None
    )


def encode_batch(batch: pa.RecordBatch, view: FeatureView, join_keys: dict[str, ValueType]) -> EncodedBatch:
    """``batch`` of ``view`` serialized as Feast's ``_convert_arrow_to_proto`` and its stores would."""
    import pandas as pd

    _validate_vector_field_lengths(batch, view)
    if view.batch_source is None:
        raise ValueError(f"Feature view '{view.name}' has no batch_source and cannot be converted to proto.")
    key_values = _columns_to_proto_values(batch, list(join_keys.items()))
    keys = _build_entity_keys(batch.num_rows, join_keys, key_values)

    def times(column: str) -> list[Any]:
        values = pd.to_datetime(batch.column(column).to_numpy(zero_copy_only=False))
        return [_coerce_datetime(v) for v in values]

    source = view.batch_source
    created = source.created_timestamp_column
    features = []
    for field in view.features:
        if field.name not in batch.schema.names:
            raise ValueError(f"Column {field.name} not found in table")
        values, texts = encode_column(batch.column(field.name), field.dtype.to_value_type())
        features.append((field.name, values, texts))
    return EncodedBatch(
        entity_keys=keys,
        event_timestamps=times(source.timestamp_field),
        created_timestamps=times(created) if created else [None] * batch.num_rows,
        features=features,
    )


def encode_column(column: pa.Array, value_type: ValueType) -> tuple[list[bytes], list[str | None]]:
    """Each value of ``column`` as Feast serializes it for ``value_type``, and its ``value_text``."""
    arrow = column.type
    if value_type == ValueType.DOUBLE and pa.types.is_float64(arrow):
        return _doubles(column.to_numpy(zero_copy_only=False).tolist())
    if value_type == ValueType.INT64 and pa.types.is_int64(arrow) and column.null_count == 0:
        return _by_value(column.to_numpy(zero_copy_only=False).tolist(), "int64_val")
    if value_type == ValueType.STRING and (pa.types.is_string(arrow) or pa.types.is_large_string(arrow)):
        return _by_value(column.to_pylist(), "string_val")
    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [p.SerializeToString() for p in protos], [extract_text_and_num(p, False)[0] for p in protos]


def _doubles(values: list[float | None]) -> tuple[list[bytes], list[str | None]]:
    """``Value(double_val=v)`` serialized, and ``str(v)``; an empty ``Value`` for a NaN or null."""
    encoded: list[bytes] = []
    texts: list[str | None] = []
    pack = _DOUBLE.pack
    for v in values:
        if v is None or v != v:
            encoded.append(b"")
            texts.append(None)
        else:
            encoded.append(pack(_DOUBLE_TAG, v))
            texts.append(str(v))
    return encoded, texts


def _by_value(values: list[Any], field: str) -> tuple[list[bytes], list[str | None]]:
    """``Value(<field>=v)`` serialized by protobuf once per distinct value, and ``str(v)``; an
    empty ``Value`` for a null."""
    seen: dict[Any, tuple[bytes, str | None]] = {None: (b"", None)}
    encoded: list[bytes] = []
    texts: list[str | None] = []
    for v in values:
        pair = seen.get(v)
        if pair is None:
            pair = seen[v] = (Value(**{field: v}).SerializeToString(), str(v))
        encoded.append(pair[0])
        texts.append(pair[1])
    return encoded, texts


def proto_rows(batch: pa.RecordBatch, view: FeatureView, join_keys: dict[str, ValueType]) -> list[Any]:
    """Feast's own rows of ``batch`` (entity key, values, times): for what :func:`encode_batch`
    does not cover."""
    return _convert_arrow_to_proto(batch, view, join_keys)
