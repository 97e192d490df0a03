"""Who may vote.

Everybody can read every page. Voting needs an identity the study knows:

* **OIDC** (``st.login``) when ``.streamlit/secrets.toml`` has an ``[auth]``
  section (Streamlit's own format: redirect_uri, cookie_secret, client_id, ...,
  or named providers ``[auth.<name>]``). A signed-in user votes under their email
  (or subject). Optionally restrict with ``[dashboard] allowed_emails = [...]``
  and/or ``allowed_domains = ["lab.org"]``.
* **Voter tokens** otherwise: ``[voters]`` maps a voter name to a secret token,
  in clear or as ``"sha256:<hex digest>"``::

      [voters]
      alice = "correct-horse-battery"
      bob = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

  The voter types the token in the sidebar; it is compared in constant time and
  never put in a URL.

Anyone else (not signed in, unknown token, email not allowed) is a reader.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Mapping

import streamlit as st

SESSION_KEY = "voter_identity"


@dataclass(frozen=True)
class Identity:
    voter: str | None  # the id votes are stored under; None = reader
    method: str  # "oidc" | "token" | "none"
    reason: str = ""  # why this person cannot vote (shown on the Vote page)

    @property
    def can_vote(self) -> bool:
        return self.voter is not None


def _secrets() -> Mapping[str, Any]:
    try:
        return {k: st.secrets[k] for k in st.secrets.keys()}
    except Exception:  # noqa: BLE001 - no secrets file at all: nothing configured
        return {}


def oidc_configured(secrets: Mapping[str, Any] | None = None) -> bool:
    s = _secrets() if secrets is None else secrets
    return "auth" in s


def oidc_providers(secrets: Mapping[str, Any]) -> list[str]:
    """Named providers (``[auth.google]`` ...); empty list = the default provider."""
    auth = secrets.get("auth") or {}
    return [k for k, v in dict(auth).items() if isinstance(v, Mapping)]


def check_token(tokens: Mapping[str, Any], given: str) -> str | None:
    """The voter whose token is ``given``, or None. Constant-time comparisons, all entries checked."""
    if not given:
        return None
    given_digest = hashlib.sha256(given.encode()).hexdigest()
    found = None
    for name, expected in dict(tokens).items():
        expected = str(expected)
        if expected.startswith("sha256:"):
            ok = hmac.compare_digest(expected[7:].lower(), given_digest)
        else:
            ok = hmac.compare_digest(expected.encode(), given.encode())
        if ok and found is None:
            found = str(name)
    return found


def _email_allowed(email: str, dash: Mapping[str, Any]) -> bool:
    emails = [str(e).lower() for e in dash.get("allowed_emails", [])]
    domains = [str(d).lower().lstrip("@") for d in dash.get("allowed_domains", [])]
    if not emails and not domains:
        return True
    e = email.lower()
    return e in emails or (e.rsplit("@", 1)[-1] in domains)


def identity() -> Identity:
    """The current session's identity (no widgets drawn)."""
    secrets = _secrets()
    if oidc_configured(secrets):
        user = st.user
        if not user.get("is_logged_in", False):
            return Identity(None, "oidc", "Sign in (sidebar) to vote.")
        email = user.get("email") or ""
        voter = email or user.get("sub") or ""
        if not voter:
            return Identity(None, "oidc", "Your sign-in carries no email or subject; ask the study's organiser.")
        if email and not _email_allowed(email, secrets.get("dashboard", {}) or {}):
            return Identity(None, "oidc", f"{email} is not on this study's voter list; you can read but not vote.")
        return Identity(str(voter), "oidc")
    tokens = secrets.get("voters")
    if not tokens:
        return Identity(
            None,
            "none",
            "Voting is not set up: add voters to .streamlit/secrets.toml ([voters] name = \"token\") "
            "or configure OIDC sign-in ([auth]).",
        )
    voter = st.session_state.get(SESSION_KEY)
    if voter and voter in dict(tokens):
        return Identity(voter, "token")
    return Identity(None, "token", "Enter your voter token in the sidebar to vote.")


def sidebar() -> Identity:
    """Sign-in / sign-out controls in the sidebar; returns the identity after them."""
    secrets = _secrets()
    ident = identity()
    with st.sidebar:
        if ident.method == "oidc":
            if ident.can_vote:
                st.caption(f"Signed in as **{ident.voter}**")
                if st.button("Sign out", key="auth_logout"):
                    st.logout()
            elif st.user.get("is_logged_in", False):
                st.caption(ident.reason)
                if st.button("Sign out", key="auth_logout"):
                    st.logout()
            else:
                providers = oidc_providers(secrets)
                if providers:
                    for p in providers:
                        if st.button(f"Sign in with {p}", key=f"auth_login_{p}"):
                            st.login(p)
                elif st.button("Sign in to vote", key="auth_login"):
                    st.login()
        elif ident.method == "token":
            if ident.can_vote:
                st.caption(f"Voting as **{ident.voter}**")
                if st.button("Sign out", key="auth_token_logout"):
                    st.session_state.pop(SESSION_KEY, None)
                    st.rerun()
            else:
                given = st.text_input("Voter token", type="password", key="auth_token_input", help="Given to you by the study's organiser. Readers need none.")
                if given:
                    voter = check_token(secrets.get("voters") or {}, given)
                    if voter is None:
                        st.error("Unknown voter token; you can read but not vote.")
                    else:
                        st.session_state[SESSION_KEY] = voter
                        st.session_state.pop("auth_token_input", None)
                        st.rerun()
    return identity()
