#!/usr/bin/env python3
"""Cross-check: the official Tencent Cloud Python SDK against the cwp-portwatch simulator.

Usage: sdk_crosscheck.py HOST:PORT
Expects the simulator to serve config/scenario-example.toml with the default test credentials.
Prints one line per check and an "N passed, M failed" summary; exits 1 on any failure.
Checks raise CheckFailed, never use `assert`: asserts vanish under `python -O`
(PYTHONOPTIMIZE), and a cross-check that cannot fail proves nothing.
"""

import sys

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sts.v20180813 import models as sts_models
from tencentcloud.sts.v20180813 import sts_client
from tencentcloud.yunjing.v20180228 import models, yunjing_client

SECRET_ID = "AKIDcwpportwatchSIMULATOR000000000000"
SECRET_KEY = "cwpportwatchSimulatorSecretKey00"
# web-02 in config/scenario-example.toml: COMPLETE from the start, whatever the time.
SETTLED_AGENT = "0d8f7a52-3c1e-4b6a-9f2d-5e4c3b2a1f00"
UNKNOWN_AGENT = "11111111-2222-4333-8444-555555555555"
# inv-01: COMPLETE from the start with five ports (the scenario's 0s entry).
INVENTORY_AGENT = "c0ffee00-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
INVENTORY_PORTS = [(22, "sshd"), (80, "nginx"), (443, "nginx"), (5432, "postgres"), (9100, "node_exporter")]
# inv-02: no task until one is created; a created task completes at once (collect_time 0s).
QUICK_AGENT = "c0ffee00-2b3c-4d4e-9f5a-6b7c8d9e0f1a"
OPEN_PORT_FIELDS = [
    "Id", "Uuid", "Port", "MachineIp", "MachineName", "ProcessName", "Pid", "CreateTime", "ModifyTime",
]


class CheckFailed(Exception):
    """A check that did not hold."""


def check(condition, message):
    """`assert` that survives `python -O`."""
    if not condition:
        raise CheckFailed(message)


def profile(endpoint, unsigned=False, **profile_opts):
    http = HttpProfile(endpoint=endpoint, protocol="http", reqTimeout=10)
    # Older SDKs read `scheme`, newer ones `protocol`: set both.
    http.scheme = "http"
    p = ClientProfile(httpProfile=http, **profile_opts)
    # Not a constructor argument: the SDK reads the attribute when signing.
    p.unsignedPayload = unsigned
    return p


def client(endpoint, secret_id=SECRET_ID, secret_key=SECRET_KEY, token=None, unsigned=False,
           **profile_opts):
    return yunjing_client.YunjingClient(
        credential.Credential(secret_id, secret_key, token), "",
        profile(endpoint, unsigned, **profile_opts),
    )


def expect_assumed_role_works(endpoint):
    """STS AssumeRole through the official sts client, then CWP with the temporary credentials."""
    sts = sts_client.StsClient(
        credential.Credential(SECRET_ID, SECRET_KEY), "ap-guangzhou", profile(endpoint)
    )
    req = sts_models.AssumeRoleRequest()
    req.RoleArn = "qcs::cam::uin/100000000001:roleName/cwp-reader"
    req.RoleSessionName = "cwp-portwatch-crosscheck"
    req.DurationSeconds = 900
    resp = sts.AssumeRole(req)
    creds = resp.Credentials
    check(creds and creds.TmpSecretId and creds.TmpSecretKey and creds.Token, "no credentials")
    check(isinstance(resp.ExpiredTime, int), f"ExpiredTime {resp.ExpiredTime!r}")
    check(resp.Expiration, "no Expiration")
    temp = client(endpoint, creds.TmpSecretId, creds.TmpSecretKey, creds.Token)
    status = expect_status(temp, SETTLED_AGENT, "COMPLETE")
    refused = expect_error(
        client(endpoint, creds.TmpSecretId, creds.TmpSecretKey), SETTLED_AGENT,
        "AuthFailure.TokenFailure",
    )
    return f"ExpiredTime={resp.ExpiredTime}; with token: {status}; without: {refused}"


def expect_machine_found(c, keyword, uuid):
    req = models.DescribeMachinesRequest()
    req.MachineType = "CVM"
    req.MachineRegion = "ap-guangzhou"
    req.Limit = 100
    f = models.Filter()
    f.Name = "Keywords"
    f.Values = [keyword]
    req.Filters = [f]
    resp = c.DescribeMachines(req)
    check(resp.RequestId, "no RequestId")
    found = [(m.MachineName, m.Uuid, m.MachineStatus) for m in resp.Machines or []]
    check(resp.TotalCount == 1 and len(found) == 1, f"TotalCount {resp.TotalCount}, machines {found}")
    check(found[0][1] == uuid and found[0][2] == "ONLINE", f"machine {found[0]}, expected Uuid {uuid}")
    return f"{found[0]}"


def describe(c, uuid):
    req = models.DescribeOpenPortTaskStatusRequest()
    req.Uuid = uuid
    return c.DescribeOpenPortTaskStatus(req)


def expect_status(c, uuid, status):
    resp = describe(c, uuid)
    check(resp.Status == status, f"Status {resp.Status!r}, expected {status!r}")
    check(resp.RequestId, "no RequestId")
    return f"Status={resp.Status} RequestId={resp.RequestId}"


def expect_error(c, uuid, code, call=describe):
    try:
        resp = call(c, uuid)
    except TencentCloudSDKException as e:
        check(e.get_code() == code, f"code {e.get_code()!r} ({e.get_message()}), expected {code!r}")
        check(e.get_request_id(), "no RequestId in the error")
        return f"{e.get_code()}: {e.get_message()}"
    raise CheckFailed(f"no error, got {resp.to_json_string()}; expected {code!r}")


def create_task(c, uuid):
    req = models.CreateOpenPortTaskRequest()
    req.Uuid = uuid
    return c.CreateOpenPortTask(req)


def open_ports_page(c, uuid=None, limit=None, offset=None, port=None):
    req = models.DescribeOpenPortsRequest()
    if uuid is not None:
        req.Uuid = uuid
    if limit is not None:
        req.Limit = limit
    if offset is not None:
        req.Offset = offset
    if port is not None:
        req.Port = port
    return c.DescribeOpenPorts(req)


def expect_all_ports(c, uuid, expected, limit, send_limit=True):
    """Pages DescribeOpenPorts to the end; every row once, TotalCount steady, fields typed.
    Without send_limit no Limit is sent, and pages must have the API's default size, `limit`."""
    rows, offset, totals = [], 0, set()
    while True:
        resp = open_ports_page(c, uuid, limit=limit if send_limit else None, offset=offset)
        check(resp.RequestId, "no RequestId")
        totals.add(resp.TotalCount)
        page = resp.OpenPorts or []
        check(len(page) <= limit, f"{len(page)} rows for Limit {limit}")
        rows.extend(page)
        offset += limit
        if offset >= resp.TotalCount:
            break
        check(offset < 10_000, "paging does not end")
    check(totals == {len(expected)}, f"TotalCount {sorted(totals)}, expected {len(expected)}")
    got = [(p.Port, p.ProcessName) for p in rows]
    check(got == expected, f"ports {got}, expected {expected}")
    for p in rows:
        missing = [f for f in OPEN_PORT_FIELDS if getattr(p, f, None) is None]
        check(not missing, f"row {p.to_json_string()} lacks {missing}")
        check(p.Uuid == uuid, f"row Uuid {p.Uuid!r}, expected {uuid!r}")
        check(isinstance(p.Id, int) and isinstance(p.Port, int) and isinstance(p.Pid, int),
              f"Id/Port/Pid not integers: {p.Id!r} {p.Port!r} {p.Pid!r}")
    pages = (len(expected) + limit - 1) // limit
    return f"{len(rows)} rows in {pages} pages of {limit}"


def expect_created_then_complete(c, uuid):
    resp = create_task(c, uuid)
    check(resp.RequestId, "no RequestId")
    status = expect_status(c, uuid, "COMPLETE")
    ports = expect_all_ports(c, uuid, [(22, "sshd")], limit=100)
    return f"created (RequestId={resp.RequestId}), then {status}; {ports}"


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
            "CreateOpenPortTask, then the task's status and ports",
            lambda: expect_created_then_complete(ok, QUICK_AGENT),
        ),
        (
            "DescribeOpenPorts paged with Limit 2",
            lambda: expect_all_ports(ok, INVENTORY_AGENT, INVENTORY_PORTS, limit=2),
        ),
        (
            "DescribeOpenPorts with the default Limit (10)",
            lambda: expect_all_ports(ok, INVENTORY_AGENT, INVENTORY_PORTS, limit=10, send_limit=False),
        ),
        (
            "DescribeOpenPorts Limit 101: InvalidParameter.InvalidFormat",
            lambda: expect_error(
                ok, INVENTORY_AGENT, "InvalidParameter.InvalidFormat",
                call=lambda c, u: open_ports_page(c, u, limit=101),
            ),
        ),
        (
            "DescribeOpenPorts without Uuid or Port: MissingParameter",
            lambda: expect_error(
                ok, None, "MissingParameter", call=lambda c, u: open_ports_page(c, limit=10),
            ),
        ),
        (
            "CreateOpenPortTask for an unknown Uuid: ResourceNotFound",
            lambda: expect_error(ok, UNKNOWN_AGENT, "ResourceNotFound", call=create_task),
        ),
        (
            "STS AssumeRole, then CWP with the temporary credentials and their token",
            lambda: expect_assumed_role_works(endpoint),
        ),
        (
            "DescribeMachines with a Keywords filter",
            lambda: expect_machine_found(ok, "inv-01", INVENTORY_AGENT),
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
