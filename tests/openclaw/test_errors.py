"""Typed errors built from the error objects a real gateway sent (tests/fixtures/frames)."""

from __future__ import annotations

import json

import pytest

from openclaw.errors import (
    AuthError,
    ConnectionLostError,
    DeviceAuthError,
    ForbiddenError,
    GatewayError,
    GatewayTimeout,
    InvalidRequestError,
    MalformedFrameError,
    NotConnectedError,
    NotFoundError,
    PairingRequiredError,
    ProtocolMismatchError,
    UnavailableError,
    error_from_payload,
)
from tests.support.frames import load_frame

TOKEN = "test-token-123"  # the token the captures were made with: must never reach a message

# From the PROTOCOL.md §2.3 table ("Gateway still starting").
UNAVAILABLE_STARTING = json.loads(
    '{"code":"UNAVAILABLE","message":"gateway is starting","retryable":true,"retryAfterMs":1500,'
    '"details":{"reason":"startup-sidecars"}}'
)


def captured_error(name: str) -> dict:
    frame = load_frame(name)
    if "received" in frame:  # 66: the raw text the gateway sent
        frame = {"response": json.loads(frame["received"])}
    response = frame.get("response", frame)
    assert response["ok"] is False
    return response["error"]


def assert_readable(err: GatewayError) -> None:
    text = err.operator_message
    assert isinstance(text, str)
    assert text[:1].isupper(), text
    assert text.rstrip(")`").endswith((".", ")")) or text.endswith("."), text
    assert len(text) > 20
    assert TOKEN not in text
    assert TOKEN not in str(err)
    assert "None" not in text
    assert "{" not in text  # no dict reprs


# --- every captured error -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "detail_code"),
    [
        ("50-config.patch.error-no-baseHash.json", InvalidRequestError, None),
        ("51-config.patch.error-stale-baseHash.json", InvalidRequestError, None),
        ("54-config.patch.error-invalid-config.json", InvalidRequestError, None),
        ("60-error.unknown-method.json", InvalidRequestError, None),
        ("61-error.bad-params.json", InvalidRequestError, None),
        ("62-error.connect-bad-token.json", AuthError, "AUTH_TOKEN_MISMATCH"),
        ("63-error.connect-no-auth.json", AuthError, "AUTH_TOKEN_MISSING"),
        ("64-error.connect-protocol-mismatch.json", ProtocolMismatchError, "PROTOCOL_MISMATCH"),
        ("65-error.missing-scope.json", ForbiddenError, "MISSING_SCOPE"),
        ("66-error.first-frame-not-connect.json", InvalidRequestError, None),
        ("67-error.chat.send-unknown-agent.json", InvalidRequestError, None),
        ("68-error.chat.send-missing-idempotencyKey.json", InvalidRequestError, None),
    ],
)
def test_it_types_every_captured_error(name, cls, detail_code):
    payload = captured_error(name)
    err = error_from_payload(payload, method="some.method")
    assert type(err) is cls
    assert err.code == payload["code"]
    assert err.message == payload["message"]
    assert err.detail_code == detail_code
    assert err.log_code == (detail_code or payload["code"])
    assert err.method == "some.method"
    assert err.retryable is False  # none of these can be fixed by retrying
    assert err.retry_after_ms is None
    assert str(err) == f"some.method: [{err.log_code}] {payload['message']}"
    assert_readable(err)


def test_it_types_a_bad_token_as_an_auth_error_with_an_actionable_message():
    err = error_from_payload(captured_error("62-error.connect-bad-token.json"), method="connect")
    assert isinstance(err, AuthError)
    assert err.detail_code == "AUTH_TOKEN_MISMATCH"
    assert err.details["recommendedNextStep"] == "retry_with_device_token"
    assert "AUTH_TOKEN_MISMATCH" in err.operator_message
    assert "admin" in err.operator_message
    assert "will not retry" in err.operator_message


def test_it_types_a_missing_token_as_an_auth_error_asking_for_one():
    err = error_from_payload(captured_error("63-error.connect-no-auth.json"))
    assert isinstance(err, AuthError)
    assert err.detail_code == "AUTH_TOKEN_MISSING"
    assert "no token was sent" in err.operator_message


def test_it_tells_every_bad_token_of_the_burst_apart_the_same_way():
    for code, detail_code, _retry_after, message in load_frame("69-bad-token-burst-results.json"):
        err = error_from_payload({"code": code, "message": message, "details": {"code": detail_code}})
        assert isinstance(err, AuthError)
        assert err.retryable is False


def test_it_names_the_expected_protocol_on_a_mismatch():
    err = error_from_payload(captured_error("64-error.connect-protocol-mismatch.json"), method="connect")
    assert isinstance(err, ProtocolMismatchError)
    assert err.details["expectedProtocol"] == 4
    assert "protocol 4" in err.operator_message
    assert "AgentFlow speaks 4" in err.operator_message


def test_it_names_the_missing_scope_on_forbidden():
    err = error_from_payload(captured_error("65-error.missing-scope.json"), method="chat.send")
    assert isinstance(err, ForbiddenError)
    assert err.missing_scope == "operator.write"
    assert err.operator_message == "Not allowed: the connection lacks the scope operator.write."


def test_it_falls_back_to_the_message_on_forbidden_without_details():
    err = error_from_payload({"code": "FORBIDDEN", "message": "nope"})
    assert isinstance(err, ForbiddenError)
    assert err.missing_scope is None
    assert err.operator_message == "Not allowed: nope."


def test_it_types_missing_scope_by_details_code_even_under_another_code():
    err = error_from_payload(
        {"code": "INVALID_REQUEST", "message": "x", "details": {"code": "MISSING_SCOPE"}}
    )
    assert isinstance(err, ForbiddenError)


def test_it_keeps_the_issues_of_an_invalid_config():
    err = error_from_payload(captured_error("54-config.patch.error-invalid-config.json"))
    assert err.details["issues"][0]["path"] == "gateway.port"
    assert "gateway.port" in err.operator_message


# --- retryable errors -----------------------------------------------------------------------------


def test_it_marks_unavailable_while_starting_retryable_with_its_wait():
    err = error_from_payload(UNAVAILABLE_STARTING, method="health")
    assert isinstance(err, UnavailableError)
    assert err.retryable is True
    assert err.retry_after_ms == 1500
    assert err.details == {"reason": "startup-sidecars"}
    assert err.log_code == "UNAVAILABLE"
    assert err.operator_message == (
        "The gateway is temporarily unavailable: gateway is starting. Retrying after 1.5 s."
    )
    assert_readable(err)


def test_it_treats_unavailable_as_retryable_unless_the_gateway_says_otherwise():
    assert error_from_payload({"code": "UNAVAILABLE", "message": "busy"}).retryable is True
    err = error_from_payload({"code": "UNAVAILABLE", "message": "restart needed", "retryable": False})
    assert isinstance(err, UnavailableError)
    assert err.retryable is False
    assert "Retrying" not in err.operator_message


def test_it_reads_the_rate_limit_wait_of_a_control_plane_write():
    err = error_from_payload(
        {
            "code": "UNAVAILABLE",
            "message": "rate limit exceeded for config.patch; retry after 35s",
            "retryAfterMs": 35000.0,
        },
        method="config.patch",
    )
    assert err.retryable
    assert err.retry_after_ms == 35000
    assert isinstance(err.retry_after_ms, int)
    assert "Retrying after 35.0 s." in err.operator_message


def test_it_honours_retryable_true_on_an_unknown_code():
    err = error_from_payload({"code": "SOMETHING_NEW", "message": "try again", "retryable": True})
    assert type(err) is GatewayError
    assert err.retryable is True
    assert err.code == "SOMETHING_NEW"


def test_it_does_not_make_an_invalid_request_retryable_even_if_flagged():
    err = error_from_payload({"code": "INVALID_REQUEST", "message": "bad", "retryable": True})
    assert isinstance(err, InvalidRequestError)
    assert err.retryable is False


def test_it_does_not_share_retryable_state_between_instances():
    error_from_payload({"code": "SOMETHING_NEW", "message": "x", "retryable": True})
    assert error_from_payload({"code": "SOMETHING_NEW", "message": "x"}).retryable is False
    assert GatewayError.retryable is False


# --- pairing and device auth ----------------------------------------------------------------------


def test_it_types_pairing_required_by_details_code():
    err = error_from_payload(
        {
            "code": "INVALID_REQUEST",
            "message": "pairing required",
            "details": {"code": "PAIRING_REQUIRED", "deviceId": "b40c9fdc", "requestId": "req-1"},
        },
        method="connect",
    )
    assert isinstance(err, PairingRequiredError)
    assert isinstance(err, AuthError)
    assert "openclaw devices approve b40c9fdc" in err.operator_message
    assert_readable(err)


def test_it_types_pairing_required_by_top_level_code_without_details():
    err = error_from_payload({"code": "PAIRING_REQUIRED", "message": "pairing required"})
    assert isinstance(err, PairingRequiredError)
    assert "approve  " not in err.operator_message
    assert "approve `" not in err.operator_message  # no empty command argument
    assert "openclaw devices approve <device id>" in err.operator_message
    assert_readable(err)


@pytest.mark.parametrize(
    "detail_code",
    [
        "DEVICE_AUTH_DEVICE_ID_MISMATCH",
        "DEVICE_AUTH_SIGNATURE_EXPIRED",
        "DEVICE_AUTH_NONCE_MISSING",
        "DEVICE_AUTH_NONCE_MISMATCH",
        "DEVICE_AUTH_SIGNATURE_INVALID",
        "DEVICE_AUTH_PUBLIC_KEY_INVALID",
    ],
)
def test_it_types_device_proof_failures(detail_code):
    err = error_from_payload(
        {"code": "INVALID_REQUEST", "message": "device signature invalid", "details": {"code": detail_code}},
        method="connect",
    )
    assert isinstance(err, DeviceAuthError)
    assert isinstance(err, AuthError)
    assert err.log_code == detail_code
    assert detail_code in err.operator_message
    assert_readable(err)


def test_it_types_an_unauthorized_code_as_an_auth_error():
    for code in ("UNAUTHORIZED", "AUTH_FAILED"):
        err = error_from_payload({"code": code, "message": "who are you"})
        assert type(err) is AuthError
        assert "Check the gateway token" in err.operator_message


def test_it_types_not_found():
    err = error_from_payload({"code": "NOT_FOUND", "message": "no such session"})
    assert isinstance(err, NotFoundError)
    assert_readable(err)


# --- odd shapes never raise -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        None,
        "boom",
        42,
        ["INVALID_REQUEST", "x"],
        {},
        {"code": None, "message": None},
        {"code": 500, "message": ["a", "b"]},
        {"code": "INVALID_REQUEST", "message": "x", "details": "not a dict"},
        {"code": "INVALID_REQUEST", "message": "x", "details": ["a"]},
        {"code": "FORBIDDEN", "message": "x", "details": {"code": 7, "missingScope": 3}},
        {"code": "UNAVAILABLE", "message": "x", "retryAfterMs": "soon"},
        {"code": "UNAVAILABLE", "message": "x", "retryAfterMs": None},
        {"code": "UNAVAILABLE", "message": "x", "retryAfterMs": float("nan")},
        {"code": "UNAVAILABLE", "message": "x", "retryAfterMs": float("inf")},
        {"code": "UNAVAILABLE", "message": "x", "retryAfterMs": -5},
        {"code": "UNAVAILABLE", "message": "x", "retryAfterMs": True},
        {"code": "INVALID_REQUEST", "message": "x", "details": {"code": None}},
    ],
)
def test_it_never_raises_on_an_odd_error_shape(error):
    err = error_from_payload(error, method="health")
    assert isinstance(err, GatewayError)
    assert isinstance(err.details, dict)
    assert err.retry_after_ms is None or err.retry_after_ms >= 0
    assert isinstance(err.operator_message, str) and err.operator_message
    assert isinstance(str(err), str)
    assert isinstance(err.log_code, str)


def test_it_keeps_a_short_excerpt_of_a_non_object_error():
    err = error_from_payload("x" * 5000)
    assert type(err) is GatewayError
    assert err.message.startswith("malformed error object: xxx")
    assert len(err.message) < 300


def test_it_decodes_nan_retry_after_from_the_wire_without_raising():
    # Python's json accepts NaN and Infinity, so a buggy gateway can send them.
    error = json.loads('{"code":"UNAVAILABLE","message":"x","retryAfterMs":NaN}')
    err = error_from_payload(error)
    assert isinstance(err, UnavailableError)
    assert err.retry_after_ms is None


# --- errors raised on this side -------------------------------------------------------------------


def test_it_describes_client_side_errors_for_operators():
    cases = [
        (GatewayTimeout("health took longer than 10.0 s"), False, "did not answer in time"),
        (ConnectionLostError("connection refused at ws://127.0.0.1:1/"), True, "Cannot reach the gateway"),
        (NotConnectedError("not connected to the gateway"), True, "Cannot reach the gateway"),
        (MalformedFrameError("frame is not JSON"), False, "frame is not JSON"),
    ]
    for err, retryable, phrase in cases:
        assert err.retryable is retryable
        assert phrase in err.operator_message
        assert_readable(err)
    assert GatewayTimeout("x").code == "TIMEOUT"
    assert NotConnectedError("x").code == "NOT_CONNECTED"
    assert isinstance(NotConnectedError("x"), ConnectionLostError)


def test_it_never_puts_the_token_into_an_auth_message_even_with_odd_details():
    # A gateway echoing what it got must not leak it through our sentence: we never format details.
    err = error_from_payload(
        {
            "code": "INVALID_REQUEST",
            "message": "unauthorized: gateway token mismatch",
            "details": {"code": "AUTH_TOKEN_MISMATCH", "authReason": "token_mismatch"},
        }
    )
    assert TOKEN not in err.operator_message
    assert err.operator_message.startswith("Authentication failed:")
