"""Small Streamlit helpers shared by the pages."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from dashboard import queries
from dashboard.media import MediaError, resolve_media

HOW_TO_FILL = (
    "Run the pipeline into this workdir first, e.g. `draganything pipeline --workdir {wd}` "
    "(or `make demo` for the tiny CPU profile)."
)


def workdir_or_stop() -> str:
    """The workdir URL, or an explanation and stop when none was given / it does not exist."""
    url = queries.workdir_url()
    if not url:
        st.error(
            "No workdir given. Start the dashboard with `draganything dashboard --workdir W` "
            "(or `streamlit run dashboard/app.py -- --workdir W`, or set $DRAGANYTHING_WORKDIR)."
        )
        st.stop()
    if "://" not in url and not os.path.isdir(url):
        st.error(f"The workdir `{url}` does not exist. " + HOW_TO_FILL.format(wd=url))
        st.stop()
    return url


def sidebar_workdir() -> None:
    url = queries.workdir_url()
    with st.sidebar:
        if url:
            st.caption(f"Workdir: `{url}`")
        else:
            st.caption("No workdir given")


def empty(what: str, stage: str, url: str) -> None:
    """The helpful message of a page with nothing to show yet."""
    st.info(
        f"{what} It is filled by the `{stage}` stage: `draganything {stage} --workdir {url}`, "
        f"or by the whole pipeline: `draganything pipeline --workdir {url}` (`make demo` runs it on the tiny CPU profile)."
    )


def pick(label: str, options: list, key: str, default=None, **kw):
    """A selectbox that keeps a valid value when the options change between reruns."""
    if not options:
        return None
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    index = options.index(default) if default in options else 0
    return st.selectbox(label, options, index=index, key=key, **kw)


def show_video(url: str, relpath: str | None = None, path: str | None = None, caption: str | None = None) -> bool:
    """A video from a table's relative path (or an already rendered local file). False if it failed."""
    try:
        if path is None:
            wd = queries.get_workdir(url)
            full = resolve_media(wd, relpath or "")
            path_or_bytes = full if wd.is_local else wd.fs.cat_file(full)
        else:
            path_or_bytes = path
        st.video(path_or_bytes, format="video/mp4", loop=True, muted=True)
        if caption:
            st.caption(caption)
        return True
    except MediaError as err:
        st.error(str(err))
        return False


def fmt_time(ts) -> str:
    if ts is None or pd.isna(ts):
        return ""
    return pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M")
