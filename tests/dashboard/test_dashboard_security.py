"""The dashboard is closed by default: loopback only, OIDC allow-lists need a verified email, rotated tokens end
sessions, and the vote store never waits long nor hides a full disk."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from dashboard.votes_store import Vote, VoteStore, VoteStoreError

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x"}


def sign_in(at, token: str):
    at.text_input(key="auth_token_input").input(token).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _oidc(make_app, open_page, workdir, user: dict, dashboard: dict | None = None):
    secrets = {"auth": AUTH, **({"dashboard": dashboard} if dashboard is not None else {})}
    at = make_app(workdir, voters=None, secrets=secrets)
    at.user = user
    return open_page(at, "vote")


def test_oidc_allow_list_needs_an_email(make_app, open_page, page_text, filled_workdir):
    at = _oidc(make_app, open_page, filled_workdir, {"is_logged_in": True, "sub": "1234"}, {"allowed_domains": ["lab.org"]})
    assert "carries no email" in page_text(at) and not at.radio


def test_oidc_allow_list_needs_a_verified_email(make_app, open_page, page_text, filled_workdir):
    user = {"is_logged_in": True, "email": "carol@lab.org", "email_verified": False, "sub": "1"}
    at = _oidc(make_app, open_page, filled_workdir, user, {"allowed_domains": ["lab.org"]})
    assert "has not verified carol@lab.org" in page_text(at) and not at.radio
    at = _oidc(make_app, open_page, filled_workdir, {**user, "email_verified": None}, {"allowed_domains": ["lab.org"]})
    assert "has not verified" in page_text(at) and not at.radio  # no claim at all: not verified either
    relaxed = {"allowed_domains": ["lab.org"], "require_verified_email": False}
    at = _oidc(make_app, open_page, filled_workdir, {**user, "email_verified": None}, relaxed)
    assert at.radio  # the organiser's choice for providers that send no claim
    at = _oidc(make_app, open_page, filled_workdir, {**user, "email_verified": True}, {"allowed_domains": ["lab.org"]})
    assert at.radio


def test_oidc_without_allow_list_never_votes_under_an_unverified_email(make_app, open_page, filled_workdir):
    from dashboard import auth

    user = {"is_logged_in": True, "email": "ceo@lab.org", "email_verified": False, "sub": "google-42"}
    assert auth._oidc_identity(user, {}).voter == "google-42"
    assert auth._oidc_identity({**user, "email_verified": True}, {}).voter == "ceo@lab.org"
    at = _oidc(make_app, open_page, filled_workdir, user)
    at.radio(key="vote_motion").set_value("A (left)")
    at.radio(key="vote_quality").set_value("A (left)")
    next(b for b in at.button if b.label == "Submit vote").click().run()
    assert set(VoteStore.for_workdir(str(filled_workdir)).frame()["voter"]) == {"google-42"}


def test_a_rotated_voter_token_ends_the_open_session(make_app, open_page, page_text, filled_workdir):
    at = sign_in(open_page(make_app(filled_workdir), "vote"), "tok-alice")
    assert at.radio
    at.secrets["voters"] = {"alice": "tok-alice-2026", "bob": "tok-bob"}  # the organiser rotates alice's token
    at.run()
    assert "no longer valid" in page_text(at) and not at.radio
    sign_in(at, "tok-alice-2026")
    assert at.radio


def _held_lock(path: str):
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    return con


def _vote(i: int = 0) -> Vote:
    return Vote(voter=f"v{i}", aspect="motion", suite="b", item_id=f"i{i}", left_checkpoint="a", right_checkpoint="b",
                choice="left", shown_at=dt.datetime.now(dt.UTC))


def test_a_held_lock_makes_the_vote_fail_within_the_store_timeout(tmp_path):
    path = str(tmp_path / "votes.sqlite")
    store = VoteStore(path, timeout_s=1.0)
    holder = _held_lock(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(VoteStoreError, match="stayed locked .* NOT stored"):
            store.record([_vote()])
        assert time.monotonic() - t0 < 4.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.record([_vote()]) == [True]
    assert VoteStore(path).timeout_s <= 15.0  # the Vote page's store: bounded well under a minute


@pytest.fixture
def full_disk(tmp_path):
    """A real 256 KB filesystem (tmpfs); needs root to mount, else skipped."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root; the disk-full message is not checked here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_is_said_as_such(full_disk):
    store = VoteStore(str(full_disk / "votes.sqlite"))
    with pytest.raises(VoteStoreError, match="is full; free space there"):
        for i in range(5000):
            store.record([_vote(i)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_command_listens_on_loopback_only(empty_workdir, tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "dashboard.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "dashboard", "--workdir", str(empty_workdir), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "dashboard.log").read_text()
            time.sleep(0.5)
        listening = [c.laddr for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
                     for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
        children = psutil.Process(proc.pid).children(recursive=True)
    finally:
        proc.terminate()  # a plain `kill` of the command stops the Streamlit server it started, too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    _, alive = psutil.wait_procs(children, timeout=30)
    for p in alive:
        p.kill()
    assert not alive, [p.pid for p in alive]
    assert "Network URL" not in (tmp_path / "dashboard.log").read_text()


def test_a_disk_filled_by_another_writer_is_said_as_such_not_disk_io_error(full_disk):
    store = VoteStore(str(full_disk / "votes.sqlite"))  # the store exists; then something else fills its disk
    fd = os.open(full_disk / "filler", os.O_WRONLY | os.O_CREAT)  # another writer fills the disk: in WAL mode SQLite
    try:                                                            # then said "disk I/O error"
        with pytest.raises(OSError):
            while True:
                os.write(fd, b"x" * 4096)
    finally:
        os.close(fd)
    with pytest.raises(VoteStoreError, match="is full; free space there"):
        store.record([_vote()])


def test_oidc_emails_are_case_folded_so_one_person_is_one_voter():
    from dashboard import auth

    user = {"is_logged_in": True, "email": "ALICE@Lab.ORG", "email_verified": True, "sub": "1"}
    assert auth._oidc_identity(user, {}).voter == "alice@lab.org"
    assert auth._oidc_identity({**user, "email": "alice@lab.org"}, {}).voter == "alice@lab.org"
    assert auth._oidc_identity(user, {"allowed_emails": ["alice@lab.org"]}).voter == "alice@lab.org"


def test_token_guesses_are_throttled_per_session(make_app, open_page, page_text, filled_workdir):
    from dashboard import auth

    at = open_page(make_app(filled_workdir), "vote")
    for k in range(auth.TOKEN_FAILURES):
        sign_in(at, f"guess-{k}")
        assert "Unknown voter token" in page_text(at)
    sign_in(at, "tok-alice")  # the right token, but after 5 wrong ones in this session: not even checked
    assert "Too many wrong voter tokens" in page_text(at) and not at.radio
    at.session_state[auth.FAILURES_KEY]["at"] = [t - auth.TOKEN_WINDOW_S for t in at.session_state[auth.FAILURES_KEY]["at"]]
    sign_in(at, "tok-alice")  # the window has passed
    assert at.radio
    assert auth.token_wait_s([0.0] * 4, 1.0) == 0 and auth.token_wait_s([0.0] * 5, 100.0) == auth.TOKEN_WINDOW_S - 100.0


def test_a_vote_store_that_cannot_be_read_is_one_sentence_on_the_vote_page(make_app, open_page, page_text, filled_workdir):
    from dashboard.votes_store import default_db_path

    db = Path(default_db_path(str(filled_workdir)))
    if db.exists():
        db.unlink()
    db.mkdir(parents=True)  # a folder where the store's file should be: every read fails
    at = sign_in(open_page(make_app(filled_workdir), "vote"), "tok-alice")
    assert "The vote store cannot be read right now" in page_text(at) and not at.radio
