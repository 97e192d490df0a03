"""Vote: the blind pairwise user study (motion control and video quality, tie allowed)."""

from __future__ import annotations

import random
import sqlite3

import streamlit as st

from core.tables import now_utc
from dashboard import auth, data, media, queries, scheduling, ui
from dashboard.votes_store import Vote

ASSIGNMENT = "vote_assignment"
FLASH = "vote_flash"
SKIPPED = "vote_skipped"
CHOICES = {"A (left)": "left", "B (right)": "right", "Tie / can't tell": "tie"}
QUESTIONS = {
    "motion": "Motion control: which video follows the drawn trajectory better?",
    "quality": "Video quality: which video looks better?",
}

st.title("Vote")
url = ui.workdir_or_stop()


def study_settings(samples_bm) -> tuple[str | None, list[str] | None]:
    """The study's suite and checkpoints: ``[study]`` in secrets, else the best-covered suite."""
    cfg = {}
    try:
        cfg = dict(st.secrets.get("study", {}))
    except Exception:  # noqa: BLE001 - no secrets file
        cfg = {}
    bm = cfg.get("suite", cfg.get("benchmark"))  # `benchmark`: the key before the suites were renamed
    if bm is None and not samples_bm.empty:
        bm = samples_bm.groupby("suite")["checkpoint_id"].nunique().sort_values(ascending=False, kind="stable").index[0]
    cks = cfg.get("checkpoints")
    return bm, (list(cks) if cks else None)


samples_bm = queries.read(url, "samples", columns=["suite", "checkpoint_id"])
if samples_bm.empty:
    ui.empty("No sample videos yet, so there is nothing to vote on.", "generate", url)
    st.stop()
suite, study_checkpoints = study_settings(samples_bm)
samples = queries.read(url, "samples", columns=["checkpoint_id", "item_id", "seed", "video_path", "height", "width"], filters=[("suite", "==", suite)])
n_ck = samples["checkpoint_id"].nunique() if study_checkpoints is None else len(set(study_checkpoints) & set(samples["checkpoint_id"]))
if n_ck < 2:
    st.info(f"The study suite {suite!r} has sample videos from {n_ck} checkpoint(s); pairwise votes need two. Generate samples for another checkpoint.")
    st.stop()

st.markdown(
    "You will see two videos of the same scene made by two different models (which is which is hidden, "
    "and the sides are shuffled). The **green line** is the path the object was asked to follow; the ring marks where it should end. "
    "Answer both questions; pick *Tie* when you honestly cannot tell."
)

ident = auth.identity()
if not ident.can_vote:
    st.warning(ident.reason + " Readers can browse the other pages.")
    st.stop()

flash = st.session_state.pop(FLASH, None)
if flash:
    (st.success if flash[0] == "ok" else st.info)(flash[1])

def guarded(read, *args):
    """A read of the vote store; when the store cannot be read (locked, disk full, damaged) one sentence, and the page stops."""
    try:
        return read(*args)
    except sqlite3.Error as err:
        st.error(f"The vote store cannot be read right now ({err}); reload in a moment. Votes already given are kept.")
        st.stop()


store = guarded(queries.vote_store, url)
rng = st.session_state.setdefault("vote_rng", random.Random())
assignment: scheduling.Assignment | None = st.session_state.get(ASSIGNMENT)
if assignment is not None and (assignment.suite != suite):
    assignment = None
if assignment is None:
    assignment = scheduling.next_assignment(
        suite,
        samples,
        guarded(store.pair_counts, suite),
        guarded(store.done_by, ident.voter, suite),
        rng=rng,
        checkpoints=study_checkpoints,
        exclude=st.session_state.get(SKIPPED, set()),
    )
    if assignment is None:
        st.success("You have judged every pair available to you. Thank you for taking part!")
        st.stop()
    st.session_state[ASSIGNMENT] = assignment

done_n = len(guarded(store.done_by, ident.voter, suite))
st.caption(f"Judgements you have given on this study: {done_n}.")

# The ground-truth trajectory of the item, drawn identically on both videos.
labels = queries.read(url, "labels", columns=["dataset", "split", "video_id", "entity_id", "centers", "radii", "visible", "height", "width"])
label_rows = data.resolve_labels(labels, assignment.item_id, suite)
objmc = queries.read(url, "objmc", columns=["checkpoint_id", "item_id", "entity_id"], filters=[("suite", "==", suite), ("item_id", "==", assignment.item_id)])
entity_ids = set(objmc["entity_id"].astype(int)) or None
wd = queries.get_workdir(url)
row_by_ck = samples.set_index(["checkpoint_id", "item_id", "seed"])
ok = True
cols = st.columns(2)
for col, name, ck, seed, rel in (
    (cols[0], "A", assignment.left_checkpoint, assignment.left_seed, assignment.left_video),
    (cols[1], "B", assignment.right_checkpoint, assignment.right_seed, assignment.right_video),
):
    with col:
        st.markdown(f"**Video {name}** ({'left' if name == 'A' else 'right'})")
        try:
            r = row_by_ck.loc[(ck, assignment.item_id, seed)]
            hw = (int(r["height"]), int(r["width"]))
            tracks = media.label_tracks(label_rows, hw, entity_ids) if not label_rows.empty else []
            path = media.overlay_video(wd, rel, tracks, tag="vote") if tracks else None
            ok &= ui.show_video(url, rel, path=path)
        except (media.MediaError, KeyError, ValueError, TypeError) as err:
            st.error(f"This video cannot be shown ({err}).")
            ok = False
if label_rows.empty:
    st.caption("No trajectory is known for this scene; judge the motion by how natural it looks.")

if not ok:
    st.warning("One of the videos could not be loaded; skip this pair.")

with st.form("vote_form", clear_on_submit=True):
    answers = {}
    for aspect in assignment.aspects:
        answers[aspect] = st.radio(QUESTIONS[aspect], list(CHOICES), index=None, horizontal=True, key=f"vote_{aspect}")
    submitted = st.form_submit_button("Submit vote", type="primary", disabled=not ok)
skip = st.button("Skip this pair", key="vote_skip", help="Not recorded; you may get this pair again in a later session.")

if skip:
    st.session_state.setdefault(SKIPPED, set()).add((assignment.item_id, *assignment.pair))
    st.session_state.pop(ASSIGNMENT, None)
    st.rerun()

if submitted:
    missing = [a for a, v in answers.items() if v is None]
    if missing:
        st.warning("Please answer " + " and ".join(QUESTIONS[m].split(":")[0].lower() for m in missing) + " before submitting.")
        st.stop()
    voted_at = now_utc()
    votes = [
        Vote(
            voter=ident.voter, aspect=aspect, suite=suite, item_id=assignment.item_id,
            left_checkpoint=assignment.left_checkpoint, right_checkpoint=assignment.right_checkpoint,
            choice=CHOICES[answer], shown_at=assignment.shown_at, voted_at=voted_at,
            left_seed=assignment.left_seed, right_seed=assignment.right_seed,
        )
        for aspect, answer in answers.items()
    ]
    try:
        new = store.record(votes)  # committed to disk before we thank anyone
    except Exception as err:  # noqa: BLE001 - say so plainly; the voter can retry
        st.error(f"Your vote could NOT be saved ({err}). Please submit again; nothing was counted.")
        st.stop()
    st.session_state.pop(ASSIGNMENT, None)
    if all(new):
        st.session_state[FLASH] = ("ok", "Thanks, your vote is saved. Here is the next pair.")
    else:
        st.session_state[FLASH] = ("dup", "This pair was already answered (double submit or another tab); it was counted once. Here is the next pair.")
    st.rerun()
