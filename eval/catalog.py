"""The evaluation catalogue: what a number means, and the one way two numbers are compared.

Everything that ranks, compares or shows evaluation numbers (the evaluate stage, the run's
verdicts and report, ``draganything status``/``report``, the dashboard) reads this module:

- ``METRICS``: the metric registry (ObjMC, FID, KID, FVD, KVD): direction, unit, display name and the
  paired comparison that applies to it (``paired``), with a sentence saying how it is made.
- ``Identity``: how a number was measured (metric, protocol, tracker or backbone, rules,
  sizes), a frozen dataclass. Tables store ``Identity.stored()`` (JSON); ``Identity.read``
  reads it back, and the ``' | '``-joined prose of older parts too. Numbers of different
  identities are never compared: :func:`compare` refuses to.
- ``protocol_of`` / ``tracking_rules`` / ``objmc_identity``: the protocol a config names,
  the tracking rules it implies, and the identities of the numbers it makes.
- ``verdict``: better / worse / indistinguishable from a paired interval; an interval that
  could not be given (None, or non-finite ends) is never a win.

Adding a metric: its function (``eval/<metric>.py``), its ``Metric`` entry here, a test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.config import Config
from core.suites import SUITES
from eval.bootstrap import Interval, paired_jackknife_difference, paired_ratio_difference
from eval.protocol import Protocol, protocol_for, tracker_label

BETTER, WORSE, SAME = "better", "worse", "indistinguishable"


# ------------------------------------------------------------------ identities


@dataclass(frozen=True)
class Identity:
    """How a number was measured. Two numbers are comparable only when their identities are equal."""

    metric: str  # a key of METRICS
    protocol: str  # eval.protocol.PROTOCOLS, or "legacy" for rows written before identities were recorded
    measured_by: str  # the tracker with its settings (ObjMC) or the feature backbone (FID/FVD)
    settings: tuple[str, ...] = ()  # the protocol's rules and the sizes, in the order they are shown

    @property
    def label(self) -> str:
        """One line for people: 'project | lk(win 9, ...) | cell grid 10, ... | eval 64x64'."""
        return " | ".join((self.protocol, self.measured_by, *self.settings)) if self.protocol != "legacy" else self.measured_by

    @property
    def detail(self) -> str:
        """The label without the protocol (a column header under a protocol's table)."""
        return " | ".join((self.measured_by, *self.settings))

    def stored(self) -> str:
        """The form kept in the tables' ``identity`` column: JSON, read back by :meth:`read`."""
        d = asdict(self)
        d["settings"] = list(self.settings)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def read(cls, stored: str, metric: str) -> Identity:
        """An ``identity`` cell: JSON (``stored``), or the prose older parts hold ('proto | by | ...')."""
        text = str(stored)
        if text.startswith("{"):
            d = json.loads(text)
            return cls(d["metric"], d["protocol"], d["measured_by"], tuple(d.get("settings", ())))
        parts = text.split(" | ")
        if len(parts) < 2:  # core.schema.LEGACY_IDENTITY: written before identities were recorded
            return cls(metric, "legacy", text)
        return cls(metric, parts[0], parts[1], tuple(parts[2:]))


def identities_of(rows: pd.DataFrame, metric: str | None = None) -> pd.Series:
    """The ``Identity`` of each row of a table with an ``identity`` column (and ``metric``, unless given)."""
    if rows.empty:
        return pd.Series([], dtype=object, index=rows.index)
    metrics = [metric] * len(rows) if metric is not None else rows["metric"].tolist()
    cache: dict[tuple[str, str], Identity] = {}
    out = []
    for s, m in zip(rows["identity"].tolist(), metrics):
        key = (str(s), str(m))
        if key not in cache:
            cache[key] = Identity.read(*key)
        out.append(cache[key])
    return pd.Series(out, dtype=object, index=rows.index)


def labelled(rows: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """``rows`` with the ``identity`` column as labels (for pages and tables people read); one label per identity."""
    if rows.empty or "identity" not in rows:
        return rows
    return rows.assign(identity=identities_of(rows, metric).map(lambda i: i.label))


# ------------------------------------------------------------------ the protocol a config names


def protocol_of(cfg: Config) -> Protocol:
    """The ``eval.protocol.Protocol`` the config names (the project protocol's knobs applied)."""
    ev = cfg.evaluate
    return protocol_for(ev.protocol, grid_size=ev.grid_size, add_centers=ev.add_centers, ground_truth=ev.ground_truth,
                        fvd_drop_to_batch=ev.fvd_drop_to_batch)


def tracking_rules(protocol: Protocol) -> dict[str, Any]:
    """The keyword rules a protocol gives ``eval.objmc.track_entities`` / ``ground_truth_tracks`` (the one map)."""
    return dict(grid_size=protocol.grid_size, add_centers=protocol.add_centers, layout=protocol.grid_layout,
                integer=protocol.integer_points, interp_shape=protocol.interp_shape)


def tracker_of(cfg: Config) -> str:
    """The configured tracker and the settings that change its tracks, e.g. 'lk(win 9, levels 3, fb 1.0)'."""
    t = cfg.evaluate.tracker
    return tracker_label(t.kind, (t.lk if t.kind == "lk" else t.cotracker).model_dump())


def objmc_identity(cfg: Config, suite: str) -> Identity:
    """The identity of this config's ObjMC numbers on a suite: protocol, tracker, rules, evaluation size."""
    spec = SUITES[suite]
    size = "original video size" if spec.kind == "labels" else f"{spec.resolution[0]}x{spec.resolution[1]}"
    gt = None if spec.kind == "labels" else "drawn paths"  # the user study's paths are drawn, never tracked
    protocol = protocol_of(cfg)
    return Identity("objmc", protocol.name, tracker_of(cfg), (protocol.objmc_rules(gt), f"eval {size}"))


def fid_identity(protocol: Protocol, backbone: str, size: tuple[int, int], frames: str = "all frames") -> Identity:
    return Identity("fid", protocol.name, backbone, (f"{frames} at {size[0]}x{size[1]}", f"ddof {protocol.fid_ddof}"))


def kid_identity(protocol: Protocol, backbone: str, size: tuple[int, int], what: str) -> Identity:
    """KID beside FID (``what``: "all frames", ...) or KVD beside FVD ("14-frame clips"): cubic kernel, unbiased."""
    metric = "kvd" if "clips" in what else "kid"
    return Identity(metric, protocol.name, backbone, (f"{what} at {size[0]}x{size[1]}", "cubic kernel, unbiased"))


def fvd_identity(protocol: Protocol, backbone: str, size: tuple[int, int], frames: int) -> Identity:
    drop = (f"dropped to a multiple of {protocol.fvd_batch}",) if protocol.fvd_drop_to_batch else ()
    return Identity("fvd", protocol.name, backbone, (f"{frames}-frame clips at {size[0]}x{size[1]}", f"ddof {protocol.fvd_ddof}", *drop))


# ------------------------------------------------------------------ what a paired comparison reads


@dataclass(frozen=True)
class Scored:
    """One checkpoint's number of one identity, with what its metric's paired comparison needs."""

    checkpoint_id: str
    value: float
    n: int
    items: pd.DataFrame | None = None  # ObjMC: per item (index item_id) the summed error ``total`` and counted pairs ``count``
    replicates: tuple[float, ...] = ()  # FID/FVD: the jackknife's leave-group-out values
    items_digest: str | None = None  # FID/FVD: which items were measured (paired only on equal digests)


Comparison = tuple[Interval | None, str]  # (interval of a - b, or None; how it was made, or why there is none)


def paired_flat_mean(a: Scored, b: Scored, confidence: float = 0.95, seed: int = 0) -> Comparison:
    """ObjMC(a) - ObjMC(b) on the items both were scored on: one bootstrap draw of items for both flat means."""
    if a.items is None or b.items is None:
        return None, "no per-item rows"
    shared = sorted(set(a.items.index) & set(b.items.index))
    if not shared:
        return None, "no shared items"
    sa, sb = a.items.loc[shared], b.items.loc[shared]
    ci = paired_ratio_difference(sa["total"], sa["count"], sb["total"], sb["count"], confidence=confidence, seed=seed)
    return ci, f"paired bootstrap of the flat-mean difference over {len(shared)} shared items"


def paired_jackknife(a: Scored, b: Scored, confidence: float = 0.95, seed: int = 0) -> Comparison:
    """FID/FVD(a) - (b) from the two stored jackknifes, when both were measured on the same items."""
    if not a.replicates or not b.replicates:
        return None, "no jackknife replicates stored"
    if a.items_digest != b.items_digest:
        return None, "measured on different items"
    ci = paired_jackknife_difference(a.value, list(a.replicates), b.value, list(b.replicates), a.n, confidence)
    return ci, f"paired jackknife over the same {a.n} items"


@dataclass(frozen=True)
class Metric:
    name: str
    display: str
    unit: str  # "" for a unitless distance
    lower_is_better: bool
    paired: Callable[[Scored, Scored, float, int], Comparison]
    comparison: str  # how ``paired`` is made, for captions

    @property
    def heading(self) -> str:
        return f"{self.display} {self.unit}".strip()


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("objmc", "ObjMC", "px", True, paired_flat_mean,
               "paired bootstrap of the difference of the two flat means over the shared items"),
        Metric("fid", "FID", "", True, paired_jackknife, "paired grouped jackknife over the same items"),
        Metric("kid", "KID", "", True, paired_jackknife, "paired leave-one-item-out jackknife over the same items"),
        Metric("fvd", "FVD", "", True, paired_jackknife, "paired grouped jackknife over the same items"),
        Metric("kvd", "KVD", "", True, paired_jackknife, "paired leave-one-item-out jackknife over the same items"),
    )
}

# The paper's Table 1 (VIPSeg val, 256 x 256, 14 frames), as published: measured with its own
# tools, so these rows carry their own protocol and are never ranked or compared with ours.
PAPER = "DragAnything (ECCV 2024), Table 1"
PAPER_PROTOCOL = "paper: pytorch-fid / TF I3D / CoTracker2"
PAPER_ROWS = (
    {"method": "DragNUWA (SVD)", "objmc": 324.6, "fid": 39.8, "fvd": 519.3},
    {"method": "DragAnything (SVD)", "objmc": 305.7, "fid": 33.5, "fvd": 494.8},
)
PAPER_ABLATION = (
    {"variant": "no control representation", "objmc": 410.7, "fid": 34.2, "fvd": 496.3},
    {"variant": "entity representation only", "objmc": 318.4, "fid": 34.1, "fvd": 494.5},
    {"variant": "2D Gaussian only", "objmc": 339.3, "fid": 34.0, "fvd": 495.3},
    {"variant": "entity + 2D Gaussian", "objmc": 305.7, "fid": 33.5, "fvd": 494.8},
    {"variant": "entity + 2D Gaussian, loss mask off", "objmc": 311.1, "fid": 34.3, "fvd": 500.2},
)


def compare(metric: str, a: Scored, b: Scored, confidence: float = 0.95, seed: int = 0) -> Comparison:
    """The metric's paired interval of (a - b). ``a`` and ``b`` must be numbers of one identity (callers group by it)."""
    return METRICS[metric].paired(a, b, confidence, seed)


def verdict(interval: Interval | None, metric: str = "objmc") -> str:
    """``BETTER`` when the whole interval of (a - b) favours a, ``WORSE`` when it favours b; else ``SAME``.

    No interval, or one with a non-finite end (too few items to give one), is no verdict.
    """
    if interval is None or not np.isfinite(interval.low) or not np.isfinite(interval.high):
        return SAME
    lower = METRICS[metric].lower_is_better
    if interval.high < 0:
        return BETTER if lower else WORSE
    if interval.low > 0:
        return WORSE if lower else BETTER
    return SAME


# ------------------------------------------------------------------ numbers by identity, from the tables


def item_totals(objmc: pd.DataFrame) -> pd.DataFrame:
    """Per item (index) of ``objmc`` rows: summed per-frame error and counted frames (the flat mean's statistics)."""
    from eval.objmc import item_sums

    return item_sums(objmc).set_index("item_id")


def scored_by_identity(metrics: pd.DataFrame, objmc: pd.DataFrame | None, suite: str, metric: str) -> dict[Identity, dict[str, Scored]]:
    """Per identity of ``metric`` on ``suite``: each checkpoint's ``Scored`` (its newest metric row).

    ObjMC is read from the per-item ``objmc`` rows (a checkpoint scored but not summarized yet
    still counts); the value is the flat mean over its items.
    """
    out: dict[Identity, dict[str, Scored]] = {}
    if metric == "objmc":
        if objmc is None or objmc.empty:
            return out
        o = objmc[objmc["suite"] == suite] if "suite" in objmc else objmc
        o = o.assign(_identity=identities_of(o, "objmc"))
        for (ident, cid), g in o.groupby(["_identity", "checkpoint_id"], sort=False):
            items = item_totals(g)
            n_pairs = float(items["count"].sum())
            value = float(items["total"].sum() / n_pairs) if n_pairs else float("nan")
            out.setdefault(ident, {})[str(cid)] = Scored(str(cid), value, len(items), items=items)
        return out
    m = metrics[(metrics["suite"] == suite) & (metrics["metric"] == metric)]
    if m.empty:
        return out
    m = m.sort_values("created_at").assign(_identity=identities_of(m, metric))
    for r in m.itertuples():
        reps = getattr(r, "replicates", None)
        reps = tuple(float(x) for x in reps) if reps is not None and len(reps) else ()
        out.setdefault(r._identity, {})[str(r.checkpoint_id)] = Scored(
            str(r.checkpoint_id), float(r.value), int(r.n) if pd.notna(r.n) else 0, replicates=reps,
            items_digest=getattr(r, "items_digest", None))
    return out


def ordered(identities: Mapping[Identity, Any] | list[Identity]) -> list[Identity]:
    """Identities in a stable order: by metric (registry order), protocol, then label."""
    order = {m: k for k, m in enumerate(METRICS)}
    return sorted(identities, key=lambda i: (order.get(i.metric, len(order)), i.protocol, i.label))
