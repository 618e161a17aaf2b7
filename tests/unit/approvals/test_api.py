"""The approvals API (gatehouse.approvals.api.handle): routes, JSON shapes, errors."""

from __future__ import annotations

import json
import re

import pytest

from gatehouse.approvals import api
from gatehouse.recording.stores import StoreError

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def assert_error(result, status: int, error_type: str, says: str = "") -> str:
    code, doc = result
    assert code == status, doc
    assert doc["type"] == "error" and doc["error"]["type"] == error_type
    assert says in doc["error"]["message"]
    return doc["error"]["message"]


@pytest.fixture
def service(make_service):
    return make_service()


def test_no_identity_is_401(service):
    assert_error(api.handle(service, "GET", "/v1/approvals", b"", None), 401, "authentication_error", "token")


def test_list_show_approve(service, file, people):
    req = file(service)
    code, doc = api.handle(service, "GET", "/v1/approvals", b"", people.bob)
    assert code == 200 and [a["id"] for a in doc["approvals"]] == [req.id]
    item = doc["approvals"][0]
    for key in (
        "id kind requester tool input input_sha256 rule message approvers approvals_required created expires "
        "state votes decided_by reason"
    ).split():
        assert key in item
    assert item["requester"] == {
        "issuer": people.alice.issuer,
        "issuer_name": "",
        "subject": "alice",
        "email": "alice@example.com",
        "name": None,
        "groups": ["developers"],
    }
    assert ISO.match(item["created"]) and ISO.match(item["expires"])
    assert item["state"] == "pending" and item["input"] == people.input and item["input_sha256"] == people.digest

    code, shown = api.handle(service, "GET", f"/v1/approvals/{req.id}", b"", people.alice)
    assert code == 200 and shown == item

    code, st = api.handle(
        service,
        "POST",
        f"/v1/approvals/{req.id}/approve",
        body({"input_sha256": people.digest, "reason": "fine"}),
        people.bob,
    )
    assert code == 200 and st["state"] == "approved" and st["reason"] == "fine"
    assert st["decided_by"][0]["subject"] == "bob" and ISO.match(st["decided_at"]) and ISO.match(st["grant_expires"])
    assert st["votes"][0]["decision"] == "approve" and ISO.match(st["votes"][0]["at"])
    assert "jti" not in json.dumps(st) and "token_id" not in json.dumps(st)

    assert api.handle(service, "GET", "/v1/approvals", b"", people.bob)[1] == {"approvals": []}
    code, doc = api.handle(service, "GET", "/v1/approvals?all=1", b"", people.bob)
    assert [a["state"] for a in doc["approvals"]] == ["approved"]


def test_deny_and_a_late_decision(service, file, people):
    req = file(service)
    path = f"/v1/approvals/{req.id}"
    code, st = api.handle(service, "POST", path + "/deny", body({"input_sha256": people.digest}), people.bob)
    assert code == 200 and st["state"] == "denied" and st["reason"] == ""
    assert_error(
        api.handle(service, "POST", path + "/approve", body({"input_sha256": people.digest}), people.carol),
        409,
        "invalid_request_error",
        "already denied by bob@example.com",
    )


def test_outsiders_neither_see_nor_decide(service, file, people):
    req = file(service)
    assert api.handle(service, "GET", "/v1/approvals", b"", people.dave)[1] == {"approvals": []}
    assert_error(api.handle(service, "GET", f"/v1/approvals/{req.id}", b"", people.dave), 403, "permission_error")
    assert_error(
        api.handle(
            service, "POST", f"/v1/approvals/{req.id}/approve", body({"input_sha256": people.digest}), people.dave
        ),
        403,
        "permission_error",
        "sre",
    )
    assert_error(
        api.handle(
            service, "POST", f"/v1/approvals/{req.id}/approve", body({"input_sha256": people.digest}), people.alice
        ),
        403,
        "permission_error",
        "requester",
    )


@pytest.mark.parametrize(
    "payload, says",
    [
        (b"", "JSON body"),
        (b"not json", "JSON body"),
        (b"[1]", "JSON body"),
        (json.dumps({"reason": "x"}).encode(), "input_sha256 is required"),
        (json.dumps({"input_sha256": ""}).encode(), "input_sha256 is required"),
        (json.dumps({"input_sha256": "a" * 64, "reason": 3}).encode(), "reason must be a string"),
        (json.dumps({"input_sha256": "a" * 64, "approve": True}).encode(), "Unknown field 'approve'"),
    ],
)
def test_bad_decision_bodies(service, file, people, payload, says):
    req = file(service)
    assert_error(
        api.handle(service, "POST", f"/v1/approvals/{req.id}/approve", payload, people.bob),
        400,
        "invalid_request_error",
        says,
    )
    assert service.status(req.id).votes == []


def test_the_call_changed(service, file, people):
    req = file(service)
    assert_error(
        api.handle(service, "POST", f"/v1/approvals/{req.id}/approve", body({"input_sha256": "b" * 64}), people.bob),
        409,
        "invalid_request_error",
        "call changed",
    )


def test_paths_and_methods(service, file, people):
    req = file(service)
    assert_error(api.handle(service, "GET", "/v1/messages", b"", people.bob), 404, "not_found_error", "/v1/approvals")
    assert_error(api.handle(service, "GET", f"/v1/approvals/{req.id}/x", b"", people.bob), 404, "not_found_error")
    assert_error(api.handle(service, "GET", "/v1/approvals/ga_nope", b"", people.bob), 404, "not_found_error")
    assert_error(api.handle(service, "POST", "/v1/approvals", b"", people.bob), 400, "invalid_request_error", "GET")
    assert_error(
        api.handle(service, "GET", f"/v1/approvals/{req.id}/approve", b"", people.bob), 400, "invalid_request_error"
    )
    assert_error(
        api.handle(service, "DELETE", f"/v1/approvals/{req.id}", b"", people.bob), 400, "invalid_request_error"
    )
    assert api.handle(service, "GET", "/v1/approvals/", b"", people.bob)[0] == 200


def test_a_store_failure_is_503(service, people, monkeypatch):
    def broken(*a, **k):
        raise StoreError("s3://b/approvals/requests/: AccessDenied")

    monkeypatch.setattr(service.store, "request_ids", broken)
    message = assert_error(api.handle(service, "GET", "/v1/approvals", b"", people.bob), 503, "api_error")
    assert "AccessDenied" not in message
