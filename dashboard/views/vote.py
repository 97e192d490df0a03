"""Vote: the blind pairwise user study (motion control and video quality, tie allowed)."""

from __future__ import annotations

import random
import sqlite3

import streamlit as st

from core.tables import now_utc
from dashboard import auth, data, media, player, queries, scheduling, ui
from dashboard.votes_store import Vote
from eval.display import short_names

ASSIGNMENT = "vote_assignment"
FLASH = "vote_flash"
SKIPPED = "vote_skipped"
REVEAL = "vote_reveal"
CHOICES = {"A (left)": "left", "B (right)": "right", "Tie / can't tell": "tie"}
QUESTIONS = {
    "motion": "Motion control: which video follows the drawn trajectory better?",
    "quality": "Video quality: which video looks better?",
}

st.title("Vote")
url = ui.workdir_or_stop()


DEFAULT_SUITE = "user-study"  # the suite made for people; `[study] suite` in secrets picks another
POOL_NOTE = ("References (`static`, `warp`) and control-off videos are told apart at a glance, so votes on them measure "
             "little about the trained models: include them only as a sanity check of the voters.")


def study_settings(samples_bm) -> tuple[str | None, list[str] | None, bool]:
    """The study's suite, its checkpoints and whether references/control-off join the pool, from
    ``[study]`` in secrets (``suite``, ``checkpoints``, ``include_references``); the suite defaults to
    ``user-study``, else the best-covered one."""
    cfg = {}
    try:
        cfg = dict(st.secrets.get("study", {}))
    except Exception:  # noqa: BLE001 - no secrets file
        cfg = {}
    bm = cfg.get("suite", cfg.get("benchmark"))  # `benchmark`: the key before the suites were renamed
    if bm is None and not samples_bm.empty:
        if DEFAULT_SUITE in set(samples_bm["suite"]):
            bm = DEFAULT_SUITE
        else:
            bm = samples_bm.groupby("suite")["checkpoint_id"].nunique().sort_values(ascending=False, kind="stable").index[0]
    cks = cfg.get("checkpoints")
    return bm, (list(cks) if cks else None), bool(cfg.get("include_references", False))


samples_bm = queries.read(url, "samples", columns=["suite", "checkpoint_id"])
if samples_bm.empty:
    ui.empty("No sample videos yet, so there is nothing to vote on.", "generate", url)
    st.stop()
suite, listed, include_cfg = study_settings(samples_bm)
samples = queries.read(url, "samples", columns=["checkpoint_id", "item_id", "seed", "video_path", "height", "width"], filters=[("suite", "==", suite)])
o1, o2 = st.columns([1, 1])
with o1:
    include_others = st.toggle("Include references and control-off", value=include_cfg, key="vote_include_others",
                               disabled=listed is not None, help=POOL_NOTE)
with o2:
    show_paths = st.toggle("Show the paths", value=True, key="vote_paths", help="Hide the drawn paths to judge the videos alone.")
if include_others:
    st.caption(POOL_NOTE)
study_checkpoints = scheduling.study_pool(queries.read(url, "checkpoints", columns=["checkpoint_id", "config", "kind"]), samples,
                                          listed, include_others)
if len(study_checkpoints) < 2:
    st.info(f"The study suite {suite!r} has sample videos from {len(study_checkpoints)} trained checkpoint(s) in the pool; pairwise votes "
            "need two. Generate samples for another checkpoint, or include references and control-off.")
    st.stop()

st.markdown(
    "You will see two videos of the same scene made by two different models (which is which is hidden, "
    "and the sides are shuffled; both are shown at the same size). The **green arrow** on the first frame is the path the object "
    "was asked to follow; the hollow ring shows where it should be at each frame. "
    "Answer both questions; pick *Tie* when you honestly cannot tell."
)

ident = auth.identity()
if not ident.can_vote:
    st.warning(ident.reason + " Readers can browse the other pages.")
    st.stop()

flash = st.session_state.pop(FLASH, None)
if flash:
    (st.success if flash[0] == "ok" else st.info)(flash[1])
reveal = st.session_state.pop(REVEAL, None)
if reveal:
    st.info(reveal, icon=":material/visibility:")

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
if assignment is not None and (assignment.suite != suite or not set(assignment.pair) <= set(study_checkpoints)):
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
sides = ((assignment.left_checkpoint, assignment.left_seed, assignment.left_video),
         (assignment.right_checkpoint, assignment.right_seed, assignment.right_video))
try:
    hws = [(int(r["height"]), int(r["width"])) for r in (row_by_ck.loc[(ck, assignment.item_id, seed)] for ck, seed, _ in sides)]
    shown_hw = media.display_size(max(hws, key=lambda hw: hw[0] * hw[1]))  # one size and one filter for both
    paths = []
    for (_, _, rel), hw in zip(sides, hws):
        tracks = media.moving(media.label_tracks(label_rows, hw, entity_ids)) if show_paths and not label_rows.empty else []
        paths.append(media.display_video(wd, rel, shown_hw, tracks, tag="vote"))
    n_frames, fps = media.probe(paths[0])
    player.show_pair(paths, ["A (left)", "B (right)"], shown_hw, fps, n_frames)
except (media.MediaError, KeyError, ValueError, TypeError, OSError) as err:
    st.error(f"These videos cannot be shown ({err}).")
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
    names = short_names([assignment.left_checkpoint, assignment.right_checkpoint])
    chose = "; ".join(f"{a}: {answers[a]}" for a in assignment.aspects)
    st.session_state[REVEAL] = (f"Last pair revealed: A (left) was **{names[assignment.left_checkpoint]}**, B (right) was "
                                f"**{names[assignment.right_checkpoint]}**. You chose {chose}.")
    if all(new):
        st.session_state[FLASH] = ("ok", "Thanks, your vote is saved. Here is the next pair.")
    else:
        st.session_state[FLASH] = ("dup", "This pair was already answered (double submit or another tab); it was counted once. Here is the next pair.")
    st.rerun()
