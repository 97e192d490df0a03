"""Vote aggregation for the blind pairwise user study: pure functions of a votes frame.

A votes frame has (at least) the columns of the ``votes`` table that matter here:
``aspect`` (motion / quality), ``left_checkpoint``, ``right_checkpoint`` and
``choice`` (left / right / tie). Which side a checkpoint was shown on is random
and carries no meaning, so every function first folds a vote into an unordered
pair ``(checkpoint_a, checkpoint_b)`` with ``checkpoint_a < checkpoint_b``.

Ties
----
A tie is a real answer ("neither follows the trajectory better"), so it is never
dropped silently. Two policies, chosen with ``ties=``:

* ``"half"`` (default): a tie counts as half a win for each side. Win rates of the
  two sides then add up to 100 %, as in the paper's "63 % vs 37 %" table, and the
  number of comparisons ``n`` is every vote. This is also how ties enter the
  Bradley-Terry fit (half a win each way, the usual treatment when the tie model
  itself is not of interest).
* ``"exclude"``: ties are left out of the win rate (``n`` = decisive votes only);
  the tie count is still reported next to it.

Wilson intervals accept a fractional success count (wins + ties / 2); this is the
usual continuous extension of the score interval and reduces to the textbook one
when there are no ties.

Bradley-Terry
-------------
Strengths ``p_i > 0`` with P(i beats j) = p_i / (p_i + p_j), the maximum-likelihood
solution found by Hunter's (2004) minorisation-maximisation iteration (with an
exact rescaling step that makes it converge in a few dozen iterations). A weak prior keeps every strength
finite (a checkpoint that won every vote, or a comparison graph in several
pieces): each checkpoint plays ``prior`` virtual games, drawn half and half,
against a fixed virtual opponent of strength 1. Ratings are reported on the
familiar Elo scale, ``400 log10(p_i)``, shifted so the mean rating is 1000;
intervals come from a nonparametric bootstrap (all resamples are fitted together,
vectorised; a tolerance of 1e-6 in log-strength is 0.0002 rating points).

Interval units
--------------
Votes are not independent: one case (item) that a checkpoint renders badly draws
every voter's vote against it, and one voter's taste runs through all their votes.
Resampling single votes then treats 30 cases x 20 voters as 600 independent
observations and gives intervals that are too narrow. ``unit=`` says what is
resampled: ``"cases"`` (default: whole items with all their votes, the question
"would another set of cases agree?"), ``"voters"`` (whole voters), or ``"votes"``
(single votes: Wilson intervals for win rates, a multinomial bootstrap for
Bradley-Terry, as before). Every table carries an ``interval`` column that says which.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

Ties = Literal["half", "exclude"]
Unit = Literal["cases", "voters", "votes"]
CHOICES = ("left", "right", "tie")
ASPECTS = ("motion", "quality")
UNIT_COLUMN = {"cases": "item_id", "voters": "voter"}
DEFAULT_UNIT: Unit = "cases"


def interval_label(unit: str, kind: str = "bootstrap") -> str:
    """What an interval resampled, in words (the ``interval`` column and the page captions)."""
    if unit == "votes":
        return "Wilson (votes independent)" if kind == "wilson" else "percentile bootstrap over votes"
    return f"percentile bootstrap over {unit}"


def _clusters(votes: pd.DataFrame, unit: str) -> np.ndarray:
    """The cluster (case or voter) of each vote, as integer codes."""
    if unit not in ("cases", "voters", "votes"):
        raise ValueError(f"unit must be 'cases', 'voters' or 'votes', got {unit!r}")
    if unit == "votes":
        return np.arange(len(votes))
    col = UNIT_COLUMN[unit]
    if col not in votes.columns:
        raise ValueError(f"resampling {unit} needs the votes' {col!r} column")
    return pd.factorize(votes[col].astype(str))[0]


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(successes, n, confidence: float = 0.95) -> tuple:
    """Wilson score interval for a proportion ``successes / n``.

    Works on scalars and on numpy arrays (element-wise). ``successes`` may be
    fractional (ties counted as halves). Where ``n`` is 0 the interval is
    (nan, nan): no votes, no information.
    """
    s = np.asarray(successes, dtype=float)
    n_ = np.asarray(n, dtype=float)
    if np.any(s < 0) or np.any(s > n_ + 1e-9):
        raise ValueError("successes must lie in [0, n]")
    z = _z(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = s / n_
        denom = 1.0 + z * z / n_
        centre = (p + z * z / (2 * n_)) / denom
        half = z * np.sqrt(p * (1 - p) / n_ + z * z / (4 * n_ * n_)) / denom
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    # Exact ends (the closed form gives them up to rounding): no successes -> 0, all -> 1.
    low = np.where(s <= 0, 0.0, low)
    high = np.where(s >= n_, 1.0, high)
    low = np.where(n_ > 0, low, np.nan)
    high = np.where(n_ > 0, high, np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def normalise_votes(votes: pd.DataFrame) -> pd.DataFrame:
    """Fold votes into unordered pairs: columns aspect, checkpoint_a, checkpoint_b, outcome.

    ``outcome`` is ``"a"``, ``"b"`` or ``"tie"`` with ``checkpoint_a < checkpoint_b``.
    Votes with an unknown choice or a checkpoint compared with itself are rejected
    (a ValueError naming how many), because they mean the writer is broken.
    """
    cols = ["aspect", "checkpoint_a", "checkpoint_b", "outcome"]
    if votes is None or len(votes) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    need = {"aspect", "left_checkpoint", "right_checkpoint", "choice"}
    missing = need - set(votes.columns)
    if missing:
        raise ValueError(f"votes frame lacks columns {sorted(missing)}")
    left = votes["left_checkpoint"].astype(str).to_numpy()
    right = votes["right_checkpoint"].astype(str).to_numpy()
    choice = votes["choice"].astype(str).str.lower().to_numpy()
    bad = ~np.isin(choice, CHOICES)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} vote(s) have a choice outside {CHOICES}")
    same = left == right
    if same.any():
        raise ValueError(f"{int(same.sum())} vote(s) compare a checkpoint with itself")
    swap = left > right
    a = np.where(swap, right, left)
    b = np.where(swap, left, right)
    winner_side = np.where(choice == "tie", "tie", np.where((choice == "left") ^ swap, "a", "b"))
    return pd.DataFrame({"aspect": votes["aspect"].astype(str).to_numpy(), "checkpoint_a": a, "checkpoint_b": b, "outcome": winner_side})


def pair_win_rates(
    votes: pd.DataFrame, ties: Ties = "half", confidence: float = 0.95, unit: Unit = DEFAULT_UNIT, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Win rate of ``checkpoint_a`` over ``checkpoint_b`` per aspect and pair, with intervals.

    Columns: aspect, checkpoint_a, checkpoint_b, n (votes), wins_a, wins_b, ties,
    n_used (denominator of the rate), win_rate_a, win_rate_b, ci_low, ci_high
    (interval of win_rate_a; that of b is 1 - high .. 1 - low), interval (what it
    resampled). ``unit="votes"``: Wilson intervals; ``"cases"`` / ``"voters"``: a
    percentile bootstrap of the rate over whole cases / voters of that pair.
    """
    if ties not in ("half", "exclude"):
        raise ValueError(f"ties must be 'half' or 'exclude', got {ties!r}")
    out_cols = ["aspect", "checkpoint_a", "checkpoint_b", "n", "wins_a", "wins_b", "ties", "n_used", "win_rate_a", "win_rate_b", "ci_low", "ci_high", "interval"]
    v = normalise_votes(votes)
    if v.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c not in (*out_cols[:3], "interval") else "object") for c in out_cols})
    v["cluster"] = _clusters(votes, unit)
    counts = (
        v.assign(one=1)
        .pivot_table(index=["aspect", "checkpoint_a", "checkpoint_b"], columns="outcome", values="one", aggfunc="sum", fill_value=0)
        .reindex(columns=["a", "b", "tie"], fill_value=0)
        .reset_index()
    )
    wins_a = counts["a"].to_numpy(float)
    wins_b = counts["b"].to_numpy(float)
    t = counts["tie"].to_numpy(float)
    n = wins_a + wins_b + t
    if ties == "half":
        succ, n_used = wins_a + t / 2.0, n
    else:
        succ, n_used = wins_a, wins_a + wins_b
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n_used > 0, succ / n_used, np.nan)
    if unit == "votes":
        low, high = wilson_interval(succ, n_used, confidence)
    else:
        low, high = _cluster_rate_intervals(v, counts, ties, confidence, n_boot, seed)
    res = pd.DataFrame(
        {
            "aspect": counts["aspect"],
            "checkpoint_a": counts["checkpoint_a"],
            "checkpoint_b": counts["checkpoint_b"],
            "n": n.astype(int),
            "wins_a": wins_a.astype(int),
            "wins_b": wins_b.astype(int),
            "ties": t.astype(int),
            "n_used": n_used.astype(int),
            "win_rate_a": rate,
            "win_rate_b": 1.0 - rate,
            "ci_low": np.atleast_1d(low),
            "ci_high": np.atleast_1d(high),
            "interval": interval_label(unit, "wilson"),
        }
    )
    return res.sort_values(["aspect", "checkpoint_a", "checkpoint_b"], ignore_index=True)


def _cluster_rate_intervals(v: pd.DataFrame, counts: pd.DataFrame, ties: Ties, confidence: float, n_boot: int, seed: int):
    """Per row of ``counts`` (aspect, pair): the rate's percentile bootstrap over that pair's clusters."""
    from eval.bootstrap import bootstrap_ratio

    low, high = np.full(len(counts), np.nan), np.full(len(counts), np.nan)
    win = np.where(v["outcome"] == "a", 1.0, 0.0)
    tie = (v["outcome"] == "tie").to_numpy(float)
    v = v.assign(succ=win + (0.5 * tie if ties == "half" else 0.0), used=1.0 - (tie if ties == "exclude" else 0.0))
    groups = v.groupby(["aspect", "checkpoint_a", "checkpoint_b"])
    for i, key in enumerate(zip(counts["aspect"], counts["checkpoint_a"], counts["checkpoint_b"])):
        per = groups.get_group(key).groupby("cluster")[["succ", "used"]].sum()
        if per["used"].sum() > 0:
            ci = bootstrap_ratio(per["succ"].to_numpy(), per["used"].to_numpy(), n_boot=n_boot, confidence=confidence, seed=seed)
            low[i], high[i] = ci.low, ci.high
    return low, high


# ---------------------------------------------------------------- Bradley-Terry


def _tally(v: pd.DataFrame, players: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per unordered pair cell: index arrays and outcome counts (a wins, b wins, ties)."""
    idx = {p: i for i, p in enumerate(players)}
    ia = v["checkpoint_a"].map(idx).to_numpy()
    ib = v["checkpoint_b"].map(idx).to_numpy()
    oc = v["outcome"].map({"a": 0, "b": 1, "tie": 2}).to_numpy()
    K = len(players)
    cell = (ia * K + ib) * 3 + oc
    flat = np.bincount(cell, minlength=K * K * 3).reshape(K * K, 3)
    used = np.nonzero(flat.sum(1))[0]
    return used, flat[used]


def _fit_counts(K: int, cells: np.ndarray, counts: np.ndarray, prior: float, max_iter: int, tol: float) -> np.ndarray:
    """Maximum-likelihood log-strengths (natural log), length K, for aggregated counts."""
    ia, ib = np.divmod(cells, K)
    wa = (counts[:, 0] + 0.5 * counts[:, 2]).astype(float)
    wb = (counts[:, 1] + 0.5 * counts[:, 2]).astype(float)
    return _fit_batch(K, ia, ib, wa[None], wb[None], prior, np.zeros((1, K)), max_iter, tol)[0]


def _fit_batch(
    K: int, ia: np.ndarray, ib: np.ndarray, wa: np.ndarray, wb: np.ndarray, prior: float, logp0: np.ndarray, max_iter: int, tol: float
) -> np.ndarray:
    """Fit R data sets at once (rows of ``wa``/``wb``: wins of a / of b per pair cell, ties as halves).

    Hunter's (2004) MM update, p_i <- W_i / sum_j n_ij / (p_i + p_j), with the
    virtual opponent (strength 1, ``prior`` drawn games with everyone) in both
    sums, followed each time by the exact best common shift of all log-strengths
    (:func:`_best_shift`). Without that shift MM crawls along the overall scale,
    which only the weak prior pins down (hundreds of iterations); with it, a few
    dozen suffice. (Newman's 2023 variant of the update oscillates for two players
    and is not used.) Stops when no log-strength moves by more than ``tol``.
    """
    R = wa.shape[0]
    offs = (np.arange(R) * K)[:, None]
    ja, jb = (ia[None] + offs).ravel(), (ib[None] + offs).ravel()
    n = (wa + wb).ravel()
    wins = (np.bincount(ja, wa.ravel(), R * K) + np.bincount(jb, wb.ravel(), R * K)).reshape(R, K) + 0.5 * prior
    logp = logp0.copy()
    for _ in range(max_iter):
        p = np.exp(logp)
        s = n / (p[:, ia] + p[:, ib]).ravel()
        den = (np.bincount(ja, s, R * K) + np.bincount(jb, s, R * K)).reshape(R, K) + prior / (p + 1.0)
        new = np.log(wins / den)
        if prior > 0:
            new += _best_shift(new)
        delta = np.max(np.abs(new - logp))
        logp = new
        if delta < tol:
            break
    return logp


def _best_shift(logp: np.ndarray, steps: int = 4) -> np.ndarray:
    """Per row, the common shift c maximising the likelihood along logp + c.

    Only the prior's games against the fixed opponent depend on c; their score
    equation is sum_i sigmoid(logp_i + c) = K / 2. Solving it exactly each
    iteration removes the one slow direction of the fixed-point iteration (the
    overall scale, which the weak prior pins down only weakly).
    """
    K = logp.shape[1]
    c = -logp.mean(axis=1, keepdims=True)
    for _ in range(steps):
        sig = 1.0 / (1.0 + np.exp(-(logp + c)))
        g = sig.sum(axis=1, keepdims=True) - K / 2.0
        h = (sig * (1.0 - sig)).sum(axis=1, keepdims=True)
        c -= g / np.maximum(h, 1e-12)
    return c


def _elo(logp: np.ndarray) -> np.ndarray:
    r = 400.0 * logp / math.log(10.0)
    return r - r.mean(axis=-1, keepdims=True) + 1000.0


def bradley_terry(
    votes: pd.DataFrame,
    aspect: str | None = None,
    prior: float = 1.0,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> pd.DataFrame:
    """Bradley-Terry ratings (Elo scale, mean 1000) per checkpoint.

    ``aspect`` restricts to one aspect (None = all votes, pooled). Columns:
    checkpoint_id, rating, strength (p_i, geometric mean 1), n (votes the
    checkpoint took part in), wins (ties as halves).
    """
    v = normalise_votes(votes)
    if aspect is not None:
        v = v[v["aspect"] == aspect]
    cols = ["checkpoint_id", "rating", "strength", "n", "wins"]
    if v.empty:
        return pd.DataFrame({c: pd.Series(dtype="object" if c == "checkpoint_id" else "float64") for c in cols})
    players = sorted(set(v["checkpoint_a"]) | set(v["checkpoint_b"]))
    K = len(players)
    cells, counts = _tally(v, players)
    logp = _fit_counts(K, cells, counts, prior, max_iter, tol)
    ia, ib = np.divmod(cells, K)
    n = np.bincount(ia, counts.sum(1), K) + np.bincount(ib, counts.sum(1), K)
    wins = np.bincount(ia, counts[:, 0] + 0.5 * counts[:, 2], K) + np.bincount(ib, counts[:, 1] + 0.5 * counts[:, 2], K)
    centred = logp - logp.mean()
    return pd.DataFrame(
        {"checkpoint_id": players, "rating": _elo(logp), "strength": np.exp(centred), "n": n.astype(int), "wins": wins}
    ).sort_values("rating", ascending=False, ignore_index=True)


def bradley_terry_bootstrap(
    votes: pd.DataFrame,
    aspect: str | None = None,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    prior: float = 1.0,
    max_iter: int = 2000,
    tol: float = 1e-6,
    unit: Unit = DEFAULT_UNIT,
) -> pd.DataFrame:
    """Bradley-Terry ratings with percentile bootstrap intervals over ``unit`` (module docstring).

    ``unit="votes"``: resampling N votes with replacement is a multinomial draw over the
    distinct (pair, outcome) cells (same distribution, much faster than refitting from
    per-vote rows). ``"cases"`` / ``"voters"``: whole clusters are drawn with replacement
    and their votes' cell counts summed. Columns: those of :func:`bradley_terry` plus
    ci_low, ci_high, interval.
    """
    point = bradley_terry(votes, aspect=aspect, prior=prior)
    if point.empty:
        return point.assign(ci_low=pd.Series(dtype="float64"), ci_high=pd.Series(dtype="float64"), interval=pd.Series(dtype="object"))
    v = normalise_votes(votes)
    v["cluster"] = _clusters(votes, unit)
    if aspect is not None:
        v = v[v["aspect"] == aspect]
    players = sorted(set(v["checkpoint_a"]) | set(v["checkpoint_b"]))
    K = len(players)
    cells, counts = _tally(v, players)
    rng = np.random.default_rng(seed)
    if unit == "votes":
        flat = counts.ravel()
        N = int(flat.sum())
        draws_counts = rng.multinomial(N, flat / N, size=n_boot).reshape(n_boot, *counts.shape)
    else:
        draws_counts = _cluster_draws(v, players, cells, n_boot, rng)
    ia, ib = np.divmod(cells, K)
    wa = draws_counts[..., 0] + 0.5 * draws_counts[..., 2]
    wb = draws_counts[..., 1] + 0.5 * draws_counts[..., 2]
    # Warm start from the full-data fit: every resample's optimum is near it.
    logp_hat = _fit_counts(K, cells, counts, prior, 10_000, 1e-10)
    draws = _fit_batch(K, ia, ib, wa.astype(float), wb.astype(float), prior, np.tile(logp_hat, (n_boot, 1)), max_iter, tol)
    elo = _elo(draws)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(elo, [alpha, 1.0 - alpha], axis=0)
    ci = pd.DataFrame({"checkpoint_id": players, "ci_low": lo, "ci_high": hi, "interval": interval_label(unit)})
    return point.merge(ci, on="checkpoint_id", how="left")


def _cluster_draws(v: pd.DataFrame, players: list[str], cells: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, cells, 3) outcome counts of resamples that draw whole clusters with replacement."""
    idx = {p: i for i, p in enumerate(players)}
    K = len(players)
    cell = (v["checkpoint_a"].map(idx).to_numpy() * K + v["checkpoint_b"].map(idx).to_numpy())
    pos = np.searchsorted(cells, cell) * 3 + v["outcome"].map({"a": 0, "b": 1, "tie": 2}).to_numpy()
    codes, cluster = np.unique(v["cluster"].to_numpy(), return_inverse=True)
    per_cluster = np.zeros((len(codes), len(cells) * 3))
    np.add.at(per_cluster, (cluster, pos), 1.0)
    picks = rng.multinomial(len(codes), np.full(len(codes), 1.0 / len(codes)), size=n_boot)
    return (picks @ per_cluster).reshape(n_boot, len(cells), 3)


def votes_per_voter(votes: pd.DataFrame) -> pd.DataFrame:
    """Per voter: votes, per-aspect counts, share of ties, first and last vote."""
    cols = ["voter", "votes", "ties", "tie_share", "first_vote", "last_vote"]
    if votes is None or len(votes) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    g = votes.assign(is_tie=votes["choice"].eq("tie")).groupby("voter")
    out = pd.DataFrame(
        {
            "votes": g.size(),
            "ties": g["is_tie"].sum().astype(int),
            "first_vote": g["voted_at"].min(),
            "last_vote": g["voted_at"].max(),
        }
    )
    for a in sorted(votes["aspect"].dropna().unique()):
        out[f"{a}_votes"] = votes[votes["aspect"] == a].groupby("voter").size().reindex(out.index, fill_value=0)
    out["tie_share"] = out["ties"] / out["votes"]
    return out.reset_index().sort_values("votes", ascending=False, ignore_index=True)


def head_to_head(
    votes: pd.DataFrame, a: str, b: str, aspects: Iterable[str] = ASPECTS, ties: Ties = "half", unit: Unit = DEFAULT_UNIT
) -> pd.DataFrame:
    """The paper's style of table for one pair: per aspect, % for a and % for b (with a's interval)."""
    rates = pair_win_rates(votes, ties=ties, unit=unit)
    lo_, hi_ = sorted([a, b])
    sub = rates[(rates["checkpoint_a"] == lo_) & (rates["checkpoint_b"] == hi_)]
    rows = []
    for asp in aspects:
        r = sub[sub["aspect"] == asp]
        if r.empty:
            rows.append({"aspect": asp, a: np.nan, b: np.nan, "n": 0, "ties": 0, "ci_low": np.nan, "ci_high": np.nan})
            continue
        r = r.iloc[0]
        ra = r["win_rate_a"] if a == lo_ else r["win_rate_b"]
        lo, hi = (r["ci_low"], r["ci_high"]) if a == lo_ else (1 - r["ci_high"], 1 - r["ci_low"])
        rows.append({"aspect": asp, a: ra, b: 1 - ra, "n": int(r["n"]), "ties": int(r["ties"]), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)
