"""Generating and saving cases on the Drag page need the same identity as voting, or the [drag] allowed list."""

from __future__ import annotations

import pytest

ADD = "FormSubmitter:drag_typed-Add points"


def _ready(at, png: bytes):
    """An uploaded scene with one entity and its path: everything Generate and Save case need."""
    at.file_uploader(key="drag_upload").upload("scene.png", png, "image/png")
    at.run()
    for text in ("130,120", "175,100 215,140"):
        at.text_input(key="drag_points").input(text)
        at.button(key=ADD).click()
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_a_signed_out_reader_cannot_generate_or_save_a_case(drag_page, drag_workdir, scene_png, page_text, profile):
    at = _ready(drag_page(drag_workdir, config=profile(executor="inline"), signed_in=False), scene_png)
    assert "same identity as voting" in page_text(at)
    assert at.button(key="drag_generate").disabled and at.button(key="drag_save").disabled  # the page also refuses a forged click
    assert not (drag_workdir / "drag").exists() and not (drag_workdir / "user-study").exists()


@pytest.mark.parametrize("allowed, may", [(["someone-else"], False), (["dragger"], True), (["*"], True)])
def test_the_drag_allowed_list_decides_who_may_generate(drag_page, drag_workdir, scene_png, page_text, allowed, may):
    at = _ready(drag_page(drag_workdir, secrets={"drag": {"allowed": allowed}}), scene_png)
    assert at.button(key="drag_generate").disabled is not may
    assert ("limited to the people listed under [drag] allowed" in page_text(at)) is not may


def test_a_star_lets_a_reader_drag_on_a_single_user_dashboard(drag_page, drag_workdir, scene_png):
    at = _ready(drag_page(drag_workdir, signed_in=False, secrets={"drag": {"allowed": ["*"]}}), scene_png)
    assert not at.button(key="drag_generate").disabled and not at.button(key="drag_save").disabled


def test_oidc_a_verified_email_on_the_drag_list_may_drag_without_being_a_voter(drag_page, drag_workdir, scene_png, page_text):
    secrets = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x"},
               "dashboard": {"allowed_emails": ["pi@lab.org"]}, "drag": {"allowed": ["@lab.org"]}}
    user = {"is_logged_in": True, "email": "student@lab.org", "email_verified": True, "sub": "7"}
    at = _ready(drag_page(drag_workdir, signed_in=False, secrets=secrets, user=user), scene_png)
    assert not at.button(key="drag_generate").disabled
    user = {**user, "email_verified": False}
    at = _ready(drag_page(drag_workdir, signed_in=False, secrets=secrets, user=user), scene_png)
    assert at.button(key="drag_generate").disabled and "limited to the people listed" in page_text(at)
