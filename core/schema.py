"""The table contract: each table's name, key, schema and column defaults.

``core/tables.py`` stores them (``Workdir``); this module only says what they hold.
``docs/tables.md`` describes every table for people.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

_point_list = pa.list_(pa.list_(pa.float32(), 2))
_ts = pa.timestamp("us", tz="UTC")


LEGACY_IDENTITY = "legacy (identity not recorded)"


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: tuple[str, ...]
    schema: pa.Schema
    defaults: tuple[tuple[str, Any], ...] = ()  # what a column added later reads as in older parts


def _spec(name: str, key: tuple[str, ...], *fields: tuple) -> TableSpec:
    """Fields are (name, type) or (name, type, default): a default fills the column where it is
    null, so parts written before the column existed still read (and keep their key)."""
    schema = pa.schema([pa.field(f[0], f[1], nullable=f[0] not in key) for f in fields])
    return TableSpec(name, key, schema, tuple((f[0], f[2]) for f in fields if len(f) > 2))


TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in [
        _spec(
            "labels",
            ("dataset", "split", "video_id", "entity_id"),
            ("dataset", pa.string()),
            ("split", pa.string()),
            ("video_id", pa.string()),
            ("entity_id", pa.int32()),
            ("category_id", pa.int32()),
            ("category", pa.string()),
            ("is_thing", pa.bool_()),
            ("frame_indices", pa.list_(pa.int32())),
            ("centers", _point_list),
            ("radii", pa.list_(pa.float32())),
            ("visible", pa.list_(pa.bool_())),
            ("area_px", pa.list_(pa.int32())),
            ("trajectory_source", pa.string()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("orig_height", pa.int32()),
            ("orig_width", pa.int32()),
            ("frames_path", pa.string()),
            ("config_digest", pa.string()),  # LabelsSettings.digest(): what the rows depend on
        ),
        _spec(
            "entity_embeddings",
            ("dataset", "video_id", "entity_id", "extractor"),
            ("dataset", pa.string()),
            ("video_id", pa.string()),
            ("entity_id", pa.int32()),
            ("extractor", pa.string()),
            ("vector", pa.list_(pa.float32())),
            ("timestep", pa.int32()),
            ("layer", pa.string()),
        ),
        _spec(
            "rejects",
            ("stage", "item"),
            ("stage", pa.string()),
            ("item", pa.string()),
            ("reason", pa.string()),
            ("at", _ts),
            ("error", pa.string()),  # the exception type (VideoError = a checked bad input)
            ("config_digest", pa.string()),  # the settings the item was tried with; another digest retries it
            ("hint", pa.string()),  # what to do about the item (core.rejects.reject_row)
        ),
        _spec(
            "checkpoints",
            ("checkpoint_id",),
            ("checkpoint_id", pa.string()),
            ("kind", pa.string()),  # trained | imported | reference | control-off (core/checkpoints.py; empty in old rows)
            ("parent", pa.string()),
            ("config", pa.string()),
            ("config_hash", pa.string()),
            ("step", pa.int64()),
            ("path", pa.string()),
            ("created_at", _ts),
        ),
        _spec(
            "train_log",
            ("checkpoint_id", "step"),
            ("checkpoint_id", pa.string()),
            ("step", pa.int64()),
            ("loss", pa.float64()),
            ("lr", pa.float64()),
            ("seconds", pa.float64()),
            ("samples_per_s", pa.float64()),
        ),
        _spec(
            "samples",
            ("checkpoint_id", "suite", "item_id", "seed"),
            ("checkpoint_id", pa.string()),
            ("suite", pa.string()),
            ("item_id", pa.string()),
            ("seed", pa.int64()),
            ("video_path", pa.string()),
            ("frames", pa.int32()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("seconds", pa.float64()),
        ),
        _spec(
            "objmc",
            ("checkpoint_id", "suite", "item_id", "entity_id", "identity"),
            ("checkpoint_id", pa.string()),
            ("suite", pa.string()),
            ("item_id", pa.string()),
            ("entity_id", pa.int32()),
            ("error_px", pa.float64()),
            ("per_frame", pa.list_(pa.float64())),
            ("tracker", pa.string()),
            ("identity", pa.string(), LEGACY_IDENTITY),
            ("seeds", pa.list_(pa.int64())),
            ("tracks", pa.list_(_point_list)),  # per seed: the predicted track (L, 2) at the video's size
            ("video_height", pa.int32()),
            ("video_width", pa.int32()),
        ),
        _spec(
            "metrics",
            ("checkpoint_id", "suite", "metric", "backbone", "identity"),
            ("checkpoint_id", pa.string()),
            ("suite", pa.string()),
            ("metric", pa.string()),
            ("backbone", pa.string()),
            ("identity", pa.string(), LEGACY_IDENTITY),
            ("protocol", pa.string(), "legacy"),
            ("value", pa.float64()),
            ("ci_low", pa.float64()),
            ("ci_high", pa.float64()),
            ("ci_method", pa.string(), "percentile bootstrap over items"),
            ("n", pa.int64()),
            ("items_digest", pa.string()),  # the scored items; paired comparisons need equal digests
            ("replicates", pa.list_(pa.float64())),  # jackknife leave-group-out values (FID/FVD)
            ("created_at", _ts),
        ),
        _spec(
            "metrics_history",
            ("checkpoint_id", "suite", "metric", "backbone", "identity", "created_at"),
            ("checkpoint_id", pa.string()),
            ("suite", pa.string()),
            ("metric", pa.string()),
            ("backbone", pa.string()),
            ("identity", pa.string()),
            ("value", pa.float64()),
            ("ci_low", pa.float64()),
            ("ci_high", pa.float64()),
            ("n", pa.int64()),
            ("created_at", _ts),
        ),
        _spec(
            "conditions",
            ("checkpoint_id", "suite", "item_id", "seed"),
            ("checkpoint_id", pa.string()),
            ("suite", pa.string()),
            ("item_id", pa.string()),
            ("seed", pa.int64()),
            ("entity_ids", pa.list_(pa.int32())),
            ("trajectories", pa.list_(_point_list)),  # (E, L, 2) what the video was asked to do, item pixels
            ("visible", pa.list_(pa.list_(pa.bool_()))),
            ("starts", _point_list),  # (E, 2) where each entity's track starts, item pixels
            ("radii", pa.list_(pa.float32())),
            ("frames", pa.int32()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("eval_height", pa.int32()),
            ("eval_width", pa.int32()),
            ("inputs_path", pa.string()),  # npz: the first frame and the entity masks given to the generator
            ("reference", pa.string()),  # the real clip (frames cache), if the suite has one
            ("ground_truth", pa.string()),  # how the trajectories were made (protocol, tracker, rules)
            ("protocol", pa.string()),
            ("notes", pa.list_(pa.string())),
            ("created_at", _ts),
        ),
        _spec(
            "votes",
            ("vote_id",),
            ("vote_id", pa.string()),
            ("voter", pa.string()),
            ("aspect", pa.string()),
            ("item_id", pa.string()),
            ("left_checkpoint", pa.string()),
            ("right_checkpoint", pa.string()),
            ("choice", pa.string()),
            ("shown_at", _ts),
            ("voted_at", _ts),
        ),
    ]
}


# Columns renamed since a workdir may have been written: {old name: new name}. Parts written
# before the rename are read (and rewritten by ``Workdir.delete``) under the new name, here and
# nowhere else, so old workdirs still open. The evaluation suites were called "benchmarks".
RENAMED_COLUMNS = {"benchmark": "suite"}


def _old_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the renamed columns under their old names."""
    back = {new: old for old, new in RENAMED_COLUMNS.items()}
    return pa.schema([f.with_name(back.get(f.name, f.name)) for f in schema])


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SchemaError(ValueError):
    """Rows do not fit a table's declared schema."""


def to_arrow(table: str, rows: pd.DataFrame | list[dict[str, Any]]) -> pa.Table:
    """Validate rows against the table's schema (types, required keys, unique keys)."""
    spec = TABLES[table]
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    names = set(spec.schema.names)
    for i, r in enumerate(records):
        unknown = set(r) - names
        missing = [k for k in spec.key if r.get(k) is None]
        if unknown:
            raise SchemaError(f"table '{table}' row {i}: unknown columns {sorted(unknown)}")
        if missing:
            raise SchemaError(f"table '{table}' row {i}: key columns {missing} are empty")
    try:
        arrow = pa.Table.from_pylist(records, schema=spec.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
        raise SchemaError(f"table '{table}': rows do not match the schema: {err}") from None
    keys = [tuple(r[k] for k in spec.key) for r in records]
    if len(set(keys)) != len(keys):
        raise SchemaError(f"table '{table}': the rows repeat a key {spec.key}")
    return arrow


def _with_defaults(spec: TableSpec, table: pa.Table) -> pa.Table:
    """Nulls of later-added columns (absent from older parts) read as their declared default."""
    import pyarrow.compute as pc

    for name, default in spec.defaults:
        if name in table.column_names and table.column(name).null_count:
            i = table.column_names.index(name)
            table = table.set_column(i, spec.schema.field(name), pc.fill_null(table.column(name), pa.scalar(default, spec.schema.field(name).type)))
    return table
