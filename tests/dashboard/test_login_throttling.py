"""Login throttling (django-axes) through the real login form: a username, or an address,
is locked after 5 failures for 15 minutes, with our lockout page; the right password is refused
while locked; ``axes_reset_username`` / the admin unlocks; the cool-off ends on its own."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.support.html import dom

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def attempt(username: str, password: str, address: str = "127.0.0.1"):
    return Client(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password})


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/"


def locked(response) -> bool:
    if response.status_code != 429:
        return False
    alert = dom(response).find("section", id="locked-out").find("p", role="alert").text
    assert "Too many failed log-in attempts" in alert
    return True


def test_the_settings_lock_per_username_and_per_address():
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME


def test_six_wrong_passwords_lock_the_account_and_the_right_one_is_refused_until_reset(operator):
    answers = [attempt("operator", f"wrong-{i}") for i in range(6)]
    for response in answers[:4]:
        assert response.status_code == 200
        assert "didn't match" in dom(response).find("p", role="alert").text
    assert locked(answers[5])
    page = dom(answers[5]).find("section", id="locked-out")
    assert "for operator" in page.text and "axes_reset_username" in page.text
    assert "0:15:00" in page.text  # the cool-off, as configured
    # Locked: the right password does not get in either (and is never checked).
    assert locked(attempt("operator", "operator-pass"))
    call_command("axes_reset_username", "operator", stdout=StringIO())
    assert logged_in(attempt("operator", "operator-pass"))


def test_the_lock_is_per_address_across_usernames(operator, viewer):
    for i in range(5):
        attempt(f"guess-{i}", "wrong", address="127.0.0.9")
    assert locked(attempt("viewer", "viewer-pass", address="127.0.0.9"))
    # Another address is not locked, and the usernames tried are not either.
    assert logged_in(attempt("viewer", "viewer-pass", address="127.0.0.10"))
    call_command("axes_reset_ip", "127.0.0.9", stdout=StringIO())
    assert logged_in(attempt("viewer", "viewer-pass", address="127.0.0.9"))


def test_the_lock_is_per_username_across_addresses(operator):
    for i in range(5):
        attempt("operator", "wrong", address=f"127.0.1.{i + 1}")
    assert locked(attempt("operator", "operator-pass", address="127.0.1.99"))


def test_a_successful_login_clears_earlier_failures(operator):
    for _ in range(4):
        attempt("operator", "wrong")
    assert logged_in(attempt("operator", "operator-pass"))
    for _ in range(4):
        attempt("operator", "wrong")
    assert logged_in(attempt("operator", "operator-pass"))  # 4 + 4 failures never reach 5 in a row


def test_the_lock_ends_after_the_cool_off(operator):
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for _ in range(5):
            attempt("operator", "wrong")
        assert locked(attempt("operator", "operator-pass"))
        traveller.shift(timedelta(minutes=14))
        assert locked(attempt("operator", "operator-pass"))  # and this restarts the wait:
        traveller.shift(timedelta(minutes=2))
        assert locked(attempt("operator", "operator-pass"))  # 16 minutes after the 5th failure
        traveller.shift(timedelta(minutes=16))
        assert logged_in(attempt("operator", "operator-pass"))


def test_an_admin_unlocks_in_the_admin(operator, admin_user):
    for _ in range(5):
        attempt("operator", "wrong")
    assert locked(attempt("operator", "operator-pass"))
    staff = Client()
    staff.force_login(admin_user)
    listing = staff.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "operator" in listing.content.decode()
    ids = [str(pk) for pk in AccessAttempt.objects.filter(username="operator").values_list("pk", flat=True)]
    response = staff.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert response.status_code == 302
    assert logged_in(attempt("operator", "operator-pass"))


def test_the_admin_login_is_throttled_too(admin_user):
    for _ in range(5):
        Client().post("/admin/login/", {"username": "boss", "password": "wrong"})
    response = Client().post("/admin/login/", {"username": "boss", "password": "boss-pass"})
    assert locked(response)
