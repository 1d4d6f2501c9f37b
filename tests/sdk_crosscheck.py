#!/usr/bin/env python3
"""Cross-check: the official Tencent Cloud Python SDK against the cwp-portwatch simulator.

Usage: sdk_crosscheck.py HOST:PORT
Expects the simulator to serve config/scenario-example.toml with the default test credentials.
Prints one line per check and an "N passed, M failed" summary; exits 1 on any failure.
"""

import sys

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.yunjing.v20180228 import models, yunjing_client

SECRET_ID = "AKIDcwpportwatchSIMULATOR000000000000"
SECRET_KEY = "cwpportwatchSimulatorSecretKey00"
# web-02 in config/scenario-example.toml: COMPLETE from the start, whatever the time.
SETTLED_AGENT = "0d8f7a52-3c1e-4b6a-9f2d-5e4c3b2a1f00"
UNKNOWN_AGENT = "11111111-2222-4333-8444-555555555555"


def client(endpoint, secret_id=SECRET_ID, secret_key=SECRET_KEY, unsigned=False, **profile_opts):
    http = HttpProfile(endpoint=endpoint, protocol="http", reqTimeout=10)
    # Older SDKs read `scheme`, newer ones `protocol`: set both.
    http.scheme = "http"
    profile = ClientProfile(httpProfile=http, **profile_opts)
    # Not a constructor argument: the SDK reads the attribute when signing.
    profile.unsignedPayload = unsigned
    return yunjing_client.YunjingClient(
        credential.Credential(secret_id, secret_key), "", profile
    )


def describe(c, uuid):
    req = models.DescribeOpenPortTaskStatusRequest()
    req.Uuid = uuid
    return c.DescribeOpenPortTaskStatus(req)


def expect_status(c, uuid, status):
    resp = describe(c, uuid)
    assert resp.Status == status, f"Status {resp.Status!r}, expected {status!r}"
    assert resp.RequestId, "no RequestId"
    return f"Status={resp.Status} RequestId={resp.RequestId}"


def expect_error(c, uuid, code):
    try:
        resp = describe(c, uuid)
    except TencentCloudSDKException as e:
        assert e.get_code() == code, f"code {e.get_code()!r} ({e.get_message()}), expected {code!r}"
        assert e.get_request_id(), "no RequestId in the error"
        return f"{e.get_code()}: {e.get_message()}"
    raise AssertionError(f"no error, got Status {resp.Status!r}; expected {code!r}")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    endpoint = sys.argv[1]
    ok = client(endpoint)
    checks = [
        ("right key: scripted status", lambda: expect_status(ok, SETTLED_AGENT, "COMPLETE")),
        (
            "wrong key: AuthFailure.SignatureFailure",
            lambda: expect_error(
                client(endpoint, secret_key="wrong-key"),
                SETTLED_AGENT,
                "AuthFailure.SignatureFailure",
            ),
        ),
        (
            "unknown SecretId: AuthFailure.SecretIdNotFound",
            lambda: expect_error(
                client(endpoint, secret_id="AKIDnotknown"),
                SETTLED_AGENT,
                "AuthFailure.SecretIdNotFound",
            ),
        ),
        (
            "unknown Uuid: ResourceNotFound",
            lambda: expect_error(ok, UNKNOWN_AGENT, "ResourceNotFound"),
        ),
        (
            "malformed Uuid: InvalidParameter.InvalidFormat",
            lambda: expect_error(ok, "web-01", "InvalidParameter.InvalidFormat"),
        ),
        (
            "unsigned payload profile",
            lambda: expect_status(
                client(endpoint, unsigned=True), SETTLED_AGENT, "COMPLETE"
            ),
        ),
        (
            "language header",
            lambda: expect_status(
                client(endpoint, language="en-US"), SETTLED_AGENT, "COMPLETE"
            ),
        ),
    ]
    passed = failed = 0
    for name, check in checks:
        try:
            detail = check()
            passed += 1
            print(f"ok   {name}: {detail}")
        except Exception as e:  # any exception is a failed check, reported, not a crash
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
