"""The dashboard's entry script: ``streamlit run dashboard/app.py -- --workdir W``.

(``draganything dashboard --workdir W`` runs exactly this through
:func:`dashboard.launch`.) The workdir can also come from $DRAGANYTHING_WORKDIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402 - after the sys.path line that makes the repository importable

from dashboard import auth, ui  # noqa: E402 - after the sys.path line that makes the repository importable

st.set_page_config(page_title="DragAnything dashboard", page_icon=":material/gesture:", layout="wide")

_PAGES = Path(__file__).resolve().parent / "views"
LEADERBOARD = st.Page(_PAGES / "leaderboard.py", title="Leaderboard", icon=":material/leaderboard:", url_path="leaderboard")


def _home() -> None:
    """``/``: the leaderboard, at its own address (a default page answers only at ``/``, so /leaderboard would not resolve)."""
    st.switch_page(LEADERBOARD)


nav = st.navigation(
    [
        st.Page(_home, title="Home", url_path="home", default=True, visibility="hidden"),
        LEADERBOARD,
        st.Page(_PAGES / "compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
        st.Page(_PAGES / "training.py", title="Training", icon=":material/show_chart:", url_path="training"),
        st.Page(_PAGES / "vote.py", title="Vote", icon=":material/how_to_vote:", url_path="vote"),
        st.Page(_PAGES / "results.py", title="Study results", icon=":material/analytics:", url_path="results"),
        st.Page(_PAGES / "drag.py", title="Drag", icon=":material/gesture:", url_path="drag"),
    ]
)
ui.sidebar_workdir()
auth.sidebar()
nav.run()
