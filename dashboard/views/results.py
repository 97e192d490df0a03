"""Study results: win rates per pair (Wilson intervals), Bradley-Terry ratings, voters, exports."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data, queries, ui
from dashboard.votes_store import export_votes
from eval import votes as vm
from eval.display import fmt_interval, fmt_percent_interval, short_names

MIN_VOTES = 5  # below this many judgements a pair's interval is shown as "n too small"

st.title("Study results")
url = ui.workdir_or_stop()

try:
    votes = queries.votes(url)
except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the caller
    st.error(f"The vote store cannot be read: {err}")
    st.stop()

with st.expander("The paper's user study (published)"):
    st.dataframe(data.PUBLISHED_USER_STUDY, hide_index=True, column_config={c: st.column_config.NumberColumn(format="percent") for c in ("DragAnything", "DragNUWA")})

if votes.empty:
    st.info(
        "No votes yet. Voters sign in on the **Vote** page (a token from `[voters]` in `.streamlit/secrets.toml`, "
        "or OIDC sign-in where `[auth]` is configured) and judge pairs of sample videos."
    )
    st.stop()

suites = sorted(votes["suite"].dropna().unique().tolist()) if "suite" in votes else []
bm_choice = None
if len(suites) > 1:
    bm_choice = ui.pick("Suite", ["(all)", *suites], key="res_suite")
    if bm_choice != "(all)":
        votes = votes[votes["suite"].isna() | (votes["suite"] == bm_choice)]

m1, m2, m3, m4 = st.columns(4)
m1.metric("votes", len(votes))
m2.metric("voters", votes["voter"].nunique())
m3.metric("items", votes["item_id"].nunique())
m4.metric("checkpoints", len(set(votes["left_checkpoint"]) | set(votes["right_checkpoint"])))

tie_label = st.radio(
    "Ties", ["count as half a win for each side", "leave out of the win rate"], horizontal=True, key="res_ties",
    help="Half: the two sides' rates add up to 100% (the paper's style). Leave out: rate among decisive votes; the tie count is shown either way.",
)
ties = "half" if tie_label.startswith("count") else "exclude"
unit_label = st.radio(
    "Intervals resample", ["cases", "voters", "votes"], horizontal=True, key="res_unit",
    help="Votes on one case (or by one voter) are not independent. Cases: whole items with all their votes are resampled "
    "(would another set of cases agree?); voters: whole voters; votes: single votes (Wilson; too narrow when cases differ).",
)
unit = unit_label

st.subheader("Win rates per pair")
rates = vm.pair_win_rates(votes, ties=ties, unit=unit)
ci_label = f"A 95% CI ({vm.interval_label(unit, 'wilson')})"
names = short_names(pd.concat([rates["checkpoint_a"], rates["checkpoint_b"]])) if not rates.empty else {}
show = rates.assign(
    **{
        "A": rates["checkpoint_a"].map(names),
        "B": rates["checkpoint_b"].map(names),
        "A wins %": rates["win_rate_a"],
        "B wins %": rates["win_rate_b"],
        ci_label: [fmt_percent_interval(lo, hi, n=n, min_n=MIN_VOTES) for lo, hi, n in zip(rates["ci_low"], rates["ci_high"], rates["n"])],
    }
)[["aspect", "A", "B", "n", "wins_a", "wins_b", "ties", "A wins %", "B wins %", ci_label, "checkpoint_a", "checkpoint_b"]]
st.dataframe(
    show, hide_index=True, width="stretch",
    column_config={"A wins %": st.column_config.NumberColumn(format="percent"), "B wins %": st.column_config.NumberColumn(format="percent")},
)

pairs = sorted({(a, b) for a, b in zip(rates["checkpoint_a"], rates["checkpoint_b"])})
if pairs:
    pair = ui.pick("Head to head", [f"{a}  vs  {b}" for a, b in pairs], key="res_pair")
    a, b = pair.split("  vs  ")
    h2h = vm.head_to_head(votes, a, b, ties=ties, unit=unit)
    h2h = h2h.assign(**{f"{a} 95% CI": [fmt_percent_interval(lo, hi, n=n, min_n=MIN_VOTES) for lo, hi, n in zip(h2h["ci_low"], h2h["ci_high"], h2h["n"])]})
    st.dataframe(h2h.drop(columns=["ci_low", "ci_high"]), hide_index=True, column_config={c: st.column_config.NumberColumn(format="percent") for c in (a, b)})
    st.caption(f"Share of votes preferring each checkpoint (the paper's '63% vs 37%' table); 95% interval for {a}: {vm.interval_label(unit, 'wilson')}.")

st.subheader("Bradley-Terry ratings")
n_boot = st.select_slider("Bootstrap resamples", [100, 200, 500, 1000], value=200, key="res_boot")
with st.spinner("Fitting Bradley-Terry with bootstrap..."):
    bt = queries.ratings(url, None if bm_choice in (None, "(all)") else bm_choice, n_boot=n_boot, unit=unit)
if not bt.empty:
    st.altair_chart(charts.forest(bt), width="stretch")
    st.dataframe(
        bt.assign(name=bt["checkpoint_id"].map(short_names(bt["checkpoint_id"])),
                  ci=[fmt_interval(lo, hi, n=n, min_n=MIN_VOTES) for lo, hi, n in zip(bt["ci_low"], bt["ci_high"], bt["n"])])
        [["aspect", "name", "rating", "ci", "n", "wins", "checkpoint_id"]],
        hide_index=True, width="stretch",
        column_config={"rating": st.column_config.NumberColumn(format="%.0f"), "name": "checkpoint", "ci": "95% interval"},
    )
    st.caption("Bradley-Terry fit (maximum likelihood, MM iteration; ties = half a win each; weak prior of one drawn game against a "
               f"reference). Intervals: {vm.interval_label(unit)}, {n_boot} resamples.")

st.subheader("Coverage")
cov = rates.groupby(["checkpoint_a", "checkpoint_b"])["n"].max().reset_index()
if not cov.empty:
    st.altair_chart(charts.coverage(cov))

st.subheader("Votes per voter")
st.dataframe(vm.votes_per_voter(votes), hide_index=True, width="stretch",
             column_config={"tie_share": st.column_config.NumberColumn(format="percent")})

st.subheader("Export")
c1, c2, c3 = st.columns(3)
EXPORTED = ("vote_id", "voter", "aspect", "suite", "item_id", "left_checkpoint", "right_checkpoint", "choice", "winner", "shown_at", "voted_at")
export_cols = [c for c in EXPORTED if c in votes.columns]
c1.download_button("Votes (CSV)", votes[export_cols].to_csv(index=False).encode(), "votes.csv", "text/csv", key="res_dl_votes")
c2.download_button("Win rates (CSV)", rates.to_csv(index=False).encode(), "win_rates.csv", "text/csv", key="res_dl_rates")
c3.download_button("Ratings (CSV)", bt.to_csv(index=False).encode(), "ratings.csv", "text/csv", key="res_dl_bt")

ident = auth.identity()
if ident.can_vote:
    if st.button("Export votes to the `votes` Parquet table", key="res_export"):
        n = export_votes(queries.get_workdir(url), queries.vote_store(url))
        st.success(f"{n} new vote(s) written to tables/votes (votes already there are skipped).")
else:
    st.caption("Signed-in voters can export the live votes to the `votes` Parquet table here; the pipeline exports them too.")
