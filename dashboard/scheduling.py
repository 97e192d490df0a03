"""Which two videos a voter sees next: cover checkpoint pairs evenly, never repeat a judgement.

Plain functions (no Streamlit). The rules:

1. Candidates are unordered pairs of checkpoints of the study that both have a
   sample of at least one common item of the suite.
2. The pair with the fewest judgements so far (all voters) goes first; equal counts
   are broken at random, so voters working at the same time spread over pairs.
3. Within the pair, the item is one the voter has not fully judged for that pair
   (some aspect still missing), preferring items with few judgements overall.
4. Only the missing aspects are asked. A voter therefore never gets the same
   (item, pair, aspect) twice; the vote store's deterministic ids enforce the same
   rule at write time, across sessions and tabs.
5. Which checkpoint goes left is a coin flip.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from core.checkpoints import TRAINED, classify
from core.tables import now_utc

ASPECTS = ("motion", "quality")


@dataclass(frozen=True)
class Assignment:
    """One screen of the study: an item, two checkpoints (already side-randomised), what to ask."""

    suite: str
    item_id: str
    left_checkpoint: str
    right_checkpoint: str
    left_seed: int
    right_seed: int
    left_video: str  # relative to the workdir, straight from the samples table
    right_video: str
    aspects: tuple[str, ...]
    shown_at: dt.datetime = field(default_factory=now_utc)

    @property
    def pair(self) -> tuple[str, str]:
        a, b = sorted((self.left_checkpoint, self.right_checkpoint))
        return a, b

def study_pool(checkpoints: pd.DataFrame, samples: pd.DataFrame, listed: Sequence[str] | None, include_others: bool) -> list[str]:
    """The checkpoints a study votes on, among those with samples: ``listed`` if given, else the
    trained ones, plus references and control-off when ``include_others`` (``checkpoints``: rows of
    the table, for their kinds; an id without a row is classified by its name)."""
    have = list(dict.fromkeys(samples["checkpoint_id"]))
    if listed is not None:
        return [c for c in listed if c in set(have)]
    known = classify(checkpoints).set_index("checkpoint_id")["kind"].to_dict() if not checkpoints.empty else {}
    missing = [c for c in have if c not in known]
    if missing:
        known |= classify(pd.DataFrame({"checkpoint_id": missing, "config": [None] * len(missing)})).set_index("checkpoint_id")["kind"].to_dict()
    return [c for c in have if include_others or known[c] == TRAINED]


def sample_index(samples: pd.DataFrame) -> dict[str, dict[str, tuple[int, str]]]:
    """checkpoint -> item -> (seed, video_path), keeping the lowest seed of each (checkpoint, item)."""
    if samples.empty:
        return {}
    s = samples.dropna(subset=["video_path"]).sort_values(["checkpoint_id", "item_id", "seed"])
    s = s.drop_duplicates(["checkpoint_id", "item_id"], keep="first")
    out: dict[str, dict[str, tuple[int, str]]] = {}
    for ck, it, seed, path in zip(s["checkpoint_id"], s["item_id"], s["seed"], s["video_path"]):
        out.setdefault(ck, {})[it] = (int(seed), path)
    return out


def ordered_pairs(
    checkpoints: Sequence[str],
    pair_counts: Mapping[tuple[str, str], int],
    rng: random.Random,
) -> list[tuple[str, str]]:
    """All unordered pairs, fewest judgements first, ties in random order."""
    pairs = list(itertools.combinations(sorted(set(checkpoints)), 2))
    keyed = [(pair_counts.get(p, 0), rng.random(), p) for p in pairs]
    keyed.sort()
    return [p for _, _, p in keyed]


def next_assignment(
    suite: str,
    samples: pd.DataFrame,
    pair_counts: Mapping[tuple[str, str], int],
    done: set[tuple[str, str, str, str]],
    rng: random.Random | None = None,
    checkpoints: Sequence[str] | None = None,
    item_counts: Mapping[str, int] | None = None,
    aspects: Sequence[str] = ASPECTS,
    exclude: set[tuple[str, str, str]] | None = None,
) -> Assignment | None:
    """The next screen for a voter, or None when they have judged everything available.

    ``samples``: rows of the samples table for ``suite`` (checkpoint_id, item_id,
    seed, video_path). ``pair_counts``: judgements per sorted pair (all voters).
    ``done``: the voter's (item_id, checkpoint_a, checkpoint_b, aspect), pair sorted.
    ``checkpoints``: the study's checkpoints (None = every one with samples).
    ``exclude``: (item_id, checkpoint_a, checkpoint_b) to skip this time (e.g. a
    video that failed to load).
    """
    rng = rng or random.Random()
    index = sample_index(samples)
    if checkpoints is not None:
        index = {c: index[c] for c in checkpoints if c in index}
    if len(index) < 2:
        return None
    item_counts = item_counts or {}
    exclude = exclude or set()
    done_by_key: dict[tuple[str, str, str], set[str]] = {}
    for item, a, b, aspect in done:
        done_by_key.setdefault((item, a, b), set()).add(aspect)
    for a, b in ordered_pairs(list(index), pair_counts, rng):
        common = index[a].keys() & index[b].keys()
        best: list[tuple[int, float, str, tuple[str, ...]]] = []
        for item in common:
            if (item, a, b) in exclude:
                continue
            missing = tuple(x for x in aspects if x not in done_by_key.get((item, a, b), ()))
            if missing:
                best.append((item_counts.get(item, 0), rng.random(), item, missing))
        if not best:
            continue
        _, _, item, missing = min(best)
        left, right = (a, b) if rng.random() < 0.5 else (b, a)
        (ls, lv), (rs, rv) = index[left][item], index[right][item]
        return Assignment(suite, item, left, right, ls, rs, lv, rv, missing)
    return None
