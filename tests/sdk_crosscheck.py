#!/usr/bin/env python3
"""Cross-check: the official Tencent Cloud Python SDK against the cwp-portwatch simulator.

Usage: sdk_crosscheck.py HOST:PORT
Expects the simulator to serve config/scenario-example.toml with the default test credentials,
started less than a minute ago (inv-01's ports change at 1m; the cwp checks accept both sets).
The yunjing client (`yunjing_client.YunjingClient`) and the live API's client
(`cwp_client.CwpClient`, service `cwp`) both talk to it; every cwp answer must parse into the
SDK's models without its "fileds are useless" warning (a field the model does not know).
Prints one line per check and an "N passed, M failed" summary; exits 1 on any failure.
Checks raise CheckFailed, never use `assert`: asserts vanish under `python -O`
(PYTHONOPTIMIZE), and a cross-check that cannot fail proves nothing.
"""

import sys
import warnings

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cwp.v20180228 import cwp_client
from tencentcloud.cwp.v20180228 import models as cwp_models
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
# inv-01's Quuid (scenario key `quuid`) and its cwp facts at the 0s entry (the 1m one adds redis).
INVENTORY_QUUID = "9f3e2a10-7c4d-4e5f-8a6b-1c2d3e4f5a6b"
# (Port, Proto, BindIp, ProcessName, Pid, User), Port and Pid as the API sends them: strings.
INVENTORY_ASSET_PORTS = [
    ("22", "tcp", "0.0.0.0", "sshd", "812", "root"),
    ("80", "tcp", "0.0.0.0", "nginx", "1201", "www-data"),
    ("443", "tcp", "0.0.0.0", "nginx", "1201", "www-data"),
    ("5432", "tcp", "127.0.0.1", "postgres", "1377", "postgres"),
    ("9100", "tcp", "::", "node_exporter", "990", "nobody"),
]
INVENTORY_ASSET_PORTS_1M = INVENTORY_ASSET_PORTS[:4] + [
    ("6379", "tcp", "0.0.0.0", "redis-server", "2044", "redis"),
    INVENTORY_ASSET_PORTS[4],
]
# web-01's default Quuid: its Uuid with every hex digit d as f-d.
WEB01_UUID = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
ASSET_PORT_FIELDS = [
    "MachineIp", "MachineWanIp", "Quuid", "Uuid", "OsInfo", "ProjectId", "Tag", "ProcessName",
    "ProcessVersion", "ProcessPath", "Pid", "User", "StartTime", "Param", "Teletype", "Port",
    "GroupName", "Md5", "Ppid", "ParentProcessName", "Proto", "BindIp", "MachineName",
    "UpdateTime", "FirstTime", "IsNew", "MachineExtraInfo",
]
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


def cwp(endpoint, secret_id=SECRET_ID, secret_key=SECRET_KEY):
    return cwp_client.CwpClient(
        credential.Credential(secret_id, secret_key), "", profile(endpoint)
    )


def strictly_parsed(call):
    """Runs call(); a "fileds are useless" warning (an answer field the SDK's model does not
    have) fails the check."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = call()
    useless = [str(w.message) for w in seen if "useless" in str(w.message)]
    check(not useless, f"fields the SDK's models do not know: {useless}")
    return result


def cwp_machines(c, limit=None, offset=None, filters=(), machine_type="CVM"):
    req = cwp_models.DescribeMachinesRequest()
    req.MachineType = machine_type
    req.MachineRegion = "ap-guangzhou"
    if limit is not None:
        req.Limit = limit
    if offset is not None:
        req.Offset = offset
    req.Filters = []
    for name, values, exact in filters:
        f = cwp_models.Filter()
        f.Name, f.Values, f.ExactMatch = name, values, exact
        req.Filters.append(f)
    return strictly_parsed(lambda: c.DescribeMachines(req))


def expect_cwp_machine_by_quuid(c):
    resp = cwp_machines(c, limit=10, filters=[("Quuid", [INVENTORY_QUUID], True)])
    check(resp.RequestId, "no RequestId")
    machines = resp.Machines or []
    check(resp.TotalCount == 1 and len(machines) == 1, f"TotalCount {resp.TotalCount}, {len(machines)} rows")
    m = machines[0]
    check(isinstance(m, cwp_models.Machine), f"row is {type(m)}")
    check((m.Uuid, m.Quuid, m.MachineName, m.MachineIp) == (INVENTORY_AGENT, INVENTORY_QUUID, "inv-01", "10.0.0.21"),
          f"machine {m.to_json_string()}")
    check(m.AgentStatus == "ONLINE" and m.MachineStatus == "ONLINE", f"status {m.AgentStatus}/{m.MachineStatus}")
    check(isinstance(m.ProjectId, int) and isinstance(m.InstanceId, str) and m.InstanceId,
          f"ProjectId {m.ProjectId!r} InstanceId {m.InstanceId!r}")
    check(isinstance(m.RegionInfo, cwp_models.RegionInfo) and m.RegionInfo.Region == "ap-guangzhou",
          f"RegionInfo {m.RegionInfo}")
    check(isinstance(m.MachineExtraInfo, cwp_models.MachineExtraInfo), f"MachineExtraInfo {m.MachineExtraInfo}")
    return f"{m.MachineName} Quuid={m.Quuid} AgentStatus={m.AgentStatus} InstanceId={m.InstanceId}"


def expect_cwp_machines_paged(c):
    """Every CVM in ap-guangzhou, paged by 3: TotalCount steady, Quuids distinct, web-01's tags."""
    rows, offset, totals = [], 0, set()
    while True:
        resp = cwp_machines(c, limit=3, offset=offset)
        totals.add(resp.TotalCount)
        rows.extend(resp.Machines or [])
        offset += 3
        if offset >= resp.TotalCount:
            break
        check(offset < 1000, "paging does not end")
    check(len(totals) == 1 and len(rows) == totals.pop(), f"{len(rows)} rows, TotalCount {totals}")
    quuids = [m.Quuid for m in rows]
    check(len(set(quuids)) == len(quuids) and all(quuids), f"Quuids {quuids}")
    web01 = [m for m in rows if m.Uuid == WEB01_UUID]
    check(len(web01) == 1, f"web-01 listed {len(web01)} times")
    tags = [(t.Name, t.TagId) for t in web01[0].Tag or []]
    check([n for n, _ in tags] == ["web", "prod"] and all(isinstance(i, int) for _, i in tags), f"tags {tags}")
    check(web01[0].MachineWanIp == "203.0.113.10", f"MachineWanIp {web01[0].MachineWanIp!r}")
    offline = cwp_machines(c, limit=100, filters=[("AgentStatus", ["OFFLINE"], True)])
    return f"{len(rows)} machines in pages of 3; {offline.TotalCount} OFFLINE now"


def asset_ports(c, quuid=None, limit=None, offset=None, filters=(), order=None, by=None):
    req = cwp_models.DescribeAssetPortInfoListRequest()
    if quuid is not None:
        req.Quuid = quuid
    if limit is not None:
        req.Limit = limit
    if offset is not None:
        req.Offset = offset
    if order is not None:
        req.Order = order
    if by is not None:
        req.By = by
    req.Filters = []
    for name, values, exact in filters:
        f = cwp_models.Filter()
        f.Name, f.Values, f.ExactMatch = name, values, exact
        req.Filters.append(f)
    return strictly_parsed(lambda: c.DescribeAssetPortInfoList(req))


def expect_all_asset_ports(c, limit, send_limit=True):
    """Pages DescribeAssetPortInfoList for inv-01 to the end: every row once, Total steady,
    fields typed as the SDK's model says (Port and Pid strings, IsNew an int)."""
    rows, offset, totals = [], 0, set()
    while True:
        resp = asset_ports(c, INVENTORY_QUUID, limit=limit if send_limit else None, offset=offset)
        check(resp.RequestId, "no RequestId")
        totals.add(resp.Total)
        page = resp.Ports or []
        check(len(page) <= limit, f"{len(page)} rows for Limit {limit}")
        rows.extend(page)
        offset += limit
        if offset >= resp.Total:
            break
        check(offset < 10_000, "paging does not end")
    got = [(p.Port, p.Proto, p.BindIp, p.ProcessName, p.Pid, p.User) for p in rows]
    check(got in (INVENTORY_ASSET_PORTS, INVENTORY_ASSET_PORTS_1M), f"ports {got}")
    check(totals == {len(got)}, f"Total {sorted(totals)}, rows {len(got)}")
    for p in rows:
        check(isinstance(p, cwp_models.AssetPortBaseInfo), f"row is {type(p)}")
        missing = [f for f in ASSET_PORT_FIELDS if getattr(p, f, None) is None]
        check(not missing, f"row {p.to_json_string()} lacks {missing}")
        check(isinstance(p.Port, str) and isinstance(p.Pid, str) and isinstance(p.Ppid, str),
              f"Port/Pid/Ppid not strings: {p.Port!r} {p.Pid!r} {p.Ppid!r}")
        check(isinstance(p.IsNew, int) and isinstance(p.ProjectId, int), f"IsNew {p.IsNew!r}")
        check((p.Quuid, p.Uuid, p.MachineName) == (INVENTORY_QUUID, INVENTORY_AGENT, "inv-01"),
              f"row ids {p.Quuid} {p.Uuid} {p.MachineName}")
        check(isinstance(p.MachineExtraInfo, cwp_models.MachineExtraInfo), "MachineExtraInfo")
    sshd = rows[0]
    check(sshd.ProcessPath == "/usr/sbin/sshd" and sshd.IsNew == 0 and sshd.FirstTime < sshd.UpdateTime,
          f"sshd {sshd.ProcessPath} IsNew={sshd.IsNew} FirstTime={sshd.FirstTime} UpdateTime={sshd.UpdateTime}")
    pages = (len(rows) + limit - 1) // limit
    return f"{len(rows)} rows in {pages} pages of {limit}; postgres on {rows[3].BindIp}"


def expect_asset_port_filters(c):
    exact = asset_ports(c, INVENTORY_QUUID, limit=100, filters=[("Port", ["5432"], True)])
    got = [(p.Port, p.BindIp, p.User) for p in exact.Ports or []]
    check(exact.Total == 1 and got == [("5432", "127.0.0.1", "postgres")], f"Port 5432: {exact.Total} {got}")
    nginx = asset_ports(c, INVENTORY_QUUID, limit=100, filters=[("User", ["www"], False), ("Proto", ["tcp"], True)])
    ports = sorted(p.Port for p in nginx.Ports or [])
    check(nginx.Total == 2 and ports == ["443", "80"], f"User www*: {nginx.Total} {ports}")
    latest = asset_ports(c, INVENTORY_QUUID, limit=1, order="DESC", by="FirstTime")
    first = (latest.Ports or [None])[0]
    check(first is not None and first.Port != "22", f"newest first: {first and first.Port}")
    return f"Port=5432 -> {got}; User~www & Proto=tcp -> {ports}; DESC FirstTime -> {first.Port}"


def expect_cwp_error(call, code):
    try:
        resp = call()
    except TencentCloudSDKException as e:
        check(e.get_code() == code, f"code {e.get_code()!r} ({e.get_message()}), expected {code!r}")
        check(e.get_request_id(), "no RequestId in the error")
        return f"{e.get_code()}: {e.get_message()}"
    raise CheckFailed(f"no error, got {resp.to_json_string()}; expected {code!r}")


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
            "cwp DescribeMachines by Quuid: Uuid, AgentStatus, typed models",
            lambda: expect_cwp_machine_by_quuid(cwp(endpoint)),
        ),
        (
            "cwp DescribeMachines paged by 3, tags, AgentStatus filter",
            lambda: expect_cwp_machines_paged(cwp(endpoint)),
        ),
        (
            "cwp DescribeMachines Limit 101: InvalidParameter",
            lambda: expect_cwp_error(lambda: cwp_machines(cwp(endpoint), limit=101), "InvalidParameter"),
        ),
        (
            "cwp DescribeAssetPortInfoList paged with Limit 2",
            lambda: expect_all_asset_ports(cwp(endpoint), limit=2),
        ),
        (
            "cwp DescribeAssetPortInfoList with the default Limit (10)",
            lambda: expect_all_asset_ports(cwp(endpoint), limit=10, send_limit=False),
        ),
        (
            "cwp DescribeAssetPortInfoList filters, Order and By",
            lambda: expect_asset_port_filters(cwp(endpoint)),
        ),
        (
            "cwp DescribeAssetPortInfoList Limit 101: InvalidParameter",
            lambda: expect_cwp_error(
                lambda: asset_ports(cwp(endpoint), INVENTORY_QUUID, limit=101), "InvalidParameter"
            ),
        ),
        (
            "cwp wrong key: AuthFailure.SignatureFailure",
            lambda: expect_cwp_error(
                lambda: asset_ports(cwp(endpoint, secret_key="wrong-key"), INVENTORY_QUUID),
                "AuthFailure.SignatureFailure",
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
