"""Ed25519 device identity: the v3 proof of the captured connect request, and the key file."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from openclaw.device import DeviceIdentity, b64url, b64url_decode, proof_payload, verify
from tests.support.frames import load_frame

CONNECT = load_frame("02-connect.request.json")["params"]
DEVICE = CONNECT["device"]
TOKEN = "test-token-123"


def captured_payload(**overrides: object) -> str:
    fields: dict = {
        "device_id": DEVICE["id"],
        "client_id": CONNECT["client"]["id"],
        "client_mode": CONNECT["client"]["mode"],
        "role": CONNECT["role"],
        "scopes": CONNECT["scopes"],
        "signed_at": DEVICE["signedAt"],
        "token": TOKEN,
        "nonce": DEVICE["nonce"],
        "platform": "linux",
        "device_family": "",
    }
    fields.update(overrides)
    return proof_payload(**fields)


# --- the captured proof ---------------------------------------------------------------------------


def test_it_rebuilds_the_v3_payload_of_the_captured_connect():
    assert captured_payload() == (
        f"v3|{DEVICE['id']}|cli|cli|operator|"
        "operator.read,operator.write,operator.admin,operator.approvals|"
        f"1795311702730|{TOKEN}|5ae646e3-e4e8-4d2c-9fa6-a758aa23032b|linux|"
    )


def test_it_verifies_the_captured_signature():
    assert verify(DEVICE["publicKey"], captured_payload(), DEVICE["signature"])


def test_it_lowercases_platform_and_device_family_as_the_gateway_does():
    assert captured_payload(platform="Linux") == captured_payload()
    assert verify(DEVICE["publicKey"], captured_payload(platform="LINUX"), DEVICE["signature"])
    assert captured_payload(device_family="Desktop").endswith("|linux|desktop")


def test_it_signed_the_challenge_it_was_given():
    challenge = load_frame("01-connect.challenge.event.json")["payload"]
    assert DEVICE["nonce"] == challenge["nonce"]
    assert DEVICE["signedAt"] == challenge["ts"]


@pytest.mark.parametrize(
    "override",
    [
        {"token": "another-token"},
        {"token": ""},
        {"nonce": "00000000-0000-0000-0000-000000000000"},
        {"signed_at": DEVICE["signedAt"] + 1},
        {"scopes": ["operator.read"]},
        {"client_mode": "backend"},
        {"platform": "darwin"},
        {"device_family": "desktop"},
    ],
    ids=lambda o: next(iter(o)),
)
def test_it_rejects_the_captured_signature_over_any_other_payload(override):
    assert not verify(DEVICE["publicKey"], captured_payload(**override), DEVICE["signature"])


def test_it_rejects_the_legacy_v2_form_for_a_v3_signature():
    v2 = "|".join(captured_payload().replace("v3|", "v2|", 1).split("|")[:-2])
    assert not verify(DEVICE["publicKey"], v2, DEVICE["signature"])


def test_it_rejects_a_tampered_signature():
    raw = bytearray(b64url_decode(DEVICE["signature"]))
    raw[0] ^= 0x01
    assert not verify(DEVICE["publicKey"], captured_payload(), b64url(bytes(raw)))
    assert not verify(DEVICE["publicKey"], captured_payload(), "")


def test_it_derives_the_device_id_from_the_raw_public_key():
    raw = b64url_decode(DEVICE["publicKey"])
    assert len(raw) == 32
    assert hashlib.sha256(raw).hexdigest() == DEVICE["id"]


def test_it_round_trips_unpadded_base64url():
    for size in range(0, 70):
        data = os.urandom(size)
        text = b64url(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert b64url_decode(text) == data
    assert b64url(b64url_decode(DEVICE["publicKey"])) == DEVICE["publicKey"]


# --- our own identity ----------------------------------------------------------------------------


def test_it_signs_a_proof_the_captured_verifier_accepts():
    identity = DeviceIdentity.generate()
    proof = identity.proof(
        nonce="n-1",
        signed_at=1795311702730,
        client_id="gateway-client",
        client_mode="backend",
        role="operator",
        scopes=("operator.read", "operator.write"),
        token=TOKEN,
        platform="Linux",
    )
    assert proof["id"] == identity.device_id
    assert proof["publicKey"] == identity.public_key
    assert proof["signedAt"] == 1795311702730
    assert proof["nonce"] == "n-1"
    payload = proof_payload(
        device_id=identity.device_id,
        client_id="gateway-client",
        client_mode="backend",
        role="operator",
        scopes=["operator.read", "operator.write"],
        signed_at=1795311702730,
        token=TOKEN,
        nonce="n-1",
        platform="linux",
    )
    assert verify(proof["publicKey"], payload, proof["signature"])
    assert not verify(DEVICE["publicKey"], payload, proof["signature"])  # another device's key


def test_it_uses_the_wire_formats_of_the_capture():
    identity = DeviceIdentity.generate()
    assert len(identity.device_id) == 64
    assert int(identity.device_id, 16) >= 0
    assert identity.device_id == hashlib.sha256(identity.public_key_raw).hexdigest()
    assert len(identity.public_key) == len(DEVICE["publicKey"]) == 43
    assert len(identity.sign("x")) == len(DEVICE["signature"]) == 86


def test_it_generates_distinct_identities():
    assert DeviceIdentity.generate().device_id != DeviceIdentity.generate().device_id


# --- the key file ---------------------------------------------------------------------------------


def test_it_creates_the_key_file_with_mode_600(tmp_path):
    path = tmp_path / "devices" / "gw-1.json"  # the parent does not exist yet
    identity = DeviceIdentity.load_or_create(path)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["deviceId"] == identity.device_id
    assert data["deviceToken"] is None
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_it_creates_the_key_file_with_mode_600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        DeviceIdentity.load_or_create(tmp_path / "gw.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "gw.json").stat().st_mode) == 0o600


def test_it_reloads_the_same_identity(tmp_path):
    path = tmp_path / "gw.json"
    first = DeviceIdentity.load_or_create(path)
    second = DeviceIdentity.load_or_create(path)
    assert second.device_id == first.device_id
    assert second.public_key == first.public_key
    assert second.path == path
    # The reloaded key signs exactly like the original one (Ed25519 is deterministic).
    assert second.sign("payload") == first.sign("payload")


def test_it_remembers_the_device_token_across_reloads(tmp_path):
    path = tmp_path / "gw.json"
    identity = DeviceIdentity.load_or_create(path)
    identity.remember_device_token("dev-token-1")
    assert identity.device_token == "dev-token-1"
    reloaded = DeviceIdentity.load_or_create(path)
    assert reloaded.device_token == "dev-token-1"
    assert reloaded.device_id == identity.device_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_it_keeps_the_device_token_when_the_gateway_sends_none(tmp_path):
    path = tmp_path / "gw.json"
    identity = DeviceIdentity.load_or_create(path)
    identity.remember_device_token("dev-token-1")
    before = path.read_text()
    identity.remember_device_token(None)
    identity.remember_device_token("")
    identity.remember_device_token("dev-token-1")  # unchanged: no rewrite needed
    assert identity.device_token == "dev-token-1"
    assert path.read_text() == before


def test_it_replaces_a_rotated_device_token(tmp_path):
    path = tmp_path / "gw.json"
    identity = DeviceIdentity.load_or_create(path)
    identity.remember_device_token("dev-token-1")
    identity.remember_device_token("dev-token-2")
    assert DeviceIdentity.load_or_create(path).device_token == "dev-token-2"


def test_it_keeps_an_in_memory_identity_off_disk(tmp_path):
    identity = DeviceIdentity.generate()
    identity.remember_device_token("dev-token")
    assert identity.device_token == "dev-token"
    assert identity.path is None
    assert list(tmp_path.iterdir()) == []
