"""HTTP API conformance: toxic creation, listing, update, delete and decoding."""

from __future__ import annotations

import json

import pytest
from faultproxy_support import assert_error, error_of

TOXIC_KEYS = ["attributes", "name", "type", "stream", "toxicity"]
DEFAULT_ATTRIBUTES = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "limit_data": {"bytes": 0},
    "noop": {},
}


def post_toxic(api, proxy: str, body) -> object:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.post(f"/proxies/{proxy}/toxics", data=data)


def ordered_keys(response) -> list[str]:
    return list(json.loads(response.content, object_pairs_hook=lambda p: dict(p)))


@pytest.mark.parametrize("type_", sorted(DEFAULT_ATTRIBUTES))
def test_create_each_type_with_defaults(api, make_proxy, type_):
    proxy = make_proxy()["name"]
    response = post_toxic(api, proxy, {"type": type_})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert ordered_keys(response) == TOXIC_KEYS
    assert response.json() == {
        "attributes": DEFAULT_ATTRIBUTES[type_],
        "name": f"{type_}_downstream",
        "type": type_,
        "stream": "downstream",
        "toxicity": 1,
    }
    assert b'"toxicity":1}' in response.content


def test_slicer_attributes_in_go_order(api, make_proxy):
    proxy = make_proxy()["name"]
    attrs = {"delay": 10, "size_variation": 1, "average_size": 4}
    response = post_toxic(api, proxy, {"type": "slicer", "attributes": attrs})
    assert response.status_code == 200
    assert b'"attributes":{"average_size":4,"size_variation":1,"delay":10}' in response.content


def test_stream_is_case_insensitive_and_echoed(api, make_proxy):
    proxy = make_proxy()["name"]
    response = post_toxic(api, proxy, {"type": "latency", "stream": "UPSTREAM"})
    assert response.status_code == 200
    assert response.json()["stream"] == "UPSTREAM"
    assert response.json()["name"] == "latency_UPSTREAM"


@pytest.mark.parametrize(
    ("value", "text"), [(0.5, b"0.5"), (0.2, b"0.2"), (0, b"0"), (2.5, b"2.5"), (-1, b"-1")]
)
def test_toxicity_printed_short_and_not_range_checked(api, make_proxy, value, text):
    proxy = make_proxy()["name"]
    response = post_toxic(api, proxy, {"type": "noop", "toxicity": value})
    assert response.status_code == 200
    assert response.content.endswith(b'"toxicity":' + text + b"}")


def float32_error(where: str, literal: str) -> str:
    return (
        f"bad request body: json: cannot unmarshal number {literal}"
        f" into Go struct field {where}.toxicity of type float32"
    )


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "3.5e38", "1e39"])
def test_toxicity_beyond_float32_is_rejected(api, make_proxy, literal):
    proxy = make_proxy()["name"]
    body = b'{"type": "noop", "toxicity": ' + literal.encode() + b"}"
    assert_error(post_toxic(api, proxy, body), 400, float32_error("ToxicWrapper", literal))
    assert api.get(f"/proxies/{proxy}/toxics").json() == []
    assert api.get("/proxies").status_code == 200


@pytest.mark.parametrize("literal", ["1e39", "-1e400"])
def test_toxicity_update_beyond_float32_is_rejected(api, make_proxy, literal):
    proxy = make_proxy()["name"]
    post_toxic(api, proxy, {"type": "noop", "toxicity": 0.5})
    path = f"/proxies/{proxy}/toxics/noop_downstream"
    body = b'{"toxicity": ' + literal.encode() + b"}"
    # Go decodes updates into an anonymous struct, hence the bare ".toxicity".
    assert_error(api.patch(path, data=body), 400, float32_error("", literal))
    assert api.get(path).json()["toxicity"] == 0.5
    assert api.get("/proxies").status_code == 200


def test_largest_float32_toxicity_is_kept(api, make_proxy):
    proxy = make_proxy()["name"]
    response = post_toxic(api, proxy, b'{"type": "noop", "toxicity": 3.4028235e38}')
    assert response.status_code == 200, response.text
    assert response.content.endswith(b'"toxicity":3.4028235e+38}')


def test_create_errors_in_go_order(api, make_proxy):
    proxy = make_proxy()["name"]
    assert_error(post_toxic(api, "nope", {"type": "latency"}), 404, "proxy not found")
    assert_error(post_toxic(api, proxy, b""), 400, "bad request body: EOF")
    invalid_stream = "stream was invalid, can be either upstream or downstream"
    assert_error(
        post_toxic(api, proxy, {"type": "latency", "stream": "sideways"}), 400, invalid_stream
    )
    assert_error(post_toxic(api, proxy, {"type": "latency", "stream": ""}), 400, invalid_stream)
    assert_error(post_toxic(api, proxy, {"type": "bogus"}), 400, "invalid toxic type")
    assert_error(post_toxic(api, proxy, {"name": "x"}), 400, "invalid toxic type")
    # Stream is checked before type.
    assert_error(post_toxic(api, proxy, {"type": "bogus", "stream": "x"}), 400, invalid_stream)


def test_duplicate_names_conflict_across_streams(api, make_proxy):
    proxy = make_proxy()["name"]
    assert post_toxic(api, proxy, {"name": "t", "type": "latency"}).status_code == 200
    again = {"name": "t", "type": "noop", "stream": "upstream"}
    assert_error(post_toxic(api, proxy, again), 409, "toxic already exists")
    # The name check comes before attribute parsing.
    bad_attrs = {"name": "t", "type": "latency", "attributes": {"latency": "slow"}}
    assert_error(post_toxic(api, proxy, bad_attrs), 409, "toxic already exists")


# The last literal is longer than Python's int() accepts (4300 digits); Go still says int64.
@pytest.mark.parametrize(
    "literal",
    [b"100.5", b"100.0", b"1e3", b'"100"', b"true", b"9223372036854775808", b"1" * 5000],
    ids=["fraction", "point-zero", "exponent", "string", "bool", "int64-overflow", "5000-digits"],
)
def test_integer_attributes_are_strict_int64(api, make_proxy, literal):
    proxy = make_proxy()["name"]
    body = b'{"type": "latency", "attributes": {"latency": ' + literal + b"}}"
    response = post_toxic(api, proxy, body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("bad request body: json: cannot unmarshal")
    assert api.get(f"/proxies/{proxy}/toxics").json() == []


def test_keys_match_case_insensitively(api, make_proxy):
    proxy = make_proxy()["name"]
    body = {"Name": "bw", "TYPE": "bandwidth", "Stream": "upstream", "Attributes": {"RATE": 100}}
    response = post_toxic(api, proxy, body)
    assert response.status_code == 200, response.text
    assert response.json()["attributes"] == {"rate": 100}
    assert response.json()["stream"] == "upstream"


def test_top_level_attributes_are_ignored(api, make_proxy):
    proxy = make_proxy()["name"]
    response = post_toxic(api, proxy, {"type": "latency", "latency": 100, "unknown": [1]})
    assert response.json()["attributes"] == {"latency": 0, "jitter": 0}


def test_null_fields_keep_defaults(api, make_proxy):
    proxy = make_proxy()["name"]
    body = {"type": "latency", "stream": None, "toxicity": None, "attributes": None}
    toxic = post_toxic(api, proxy, body).json()
    assert toxic["stream"] == "downstream" and toxic["toxicity"] == 1
    assert toxic["attributes"] == {"latency": 0, "jitter": 0}


def test_list_upstream_first_then_insertion_order(api, make_proxy):
    proxy = make_proxy()["name"]
    for name, stream in (
        ("d1", "downstream"),
        ("u1", "upstream"),
        ("d2", "downstream"),
        ("u2", "upstream"),
    ):
        assert post_toxic(api, proxy, {"name": name, "type": "noop", "stream": stream}).ok
    listed = api.get(f"/proxies/{proxy}/toxics")
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()] == ["u1", "u2", "d1", "d2"]
    shown = api.get(f"/proxies/{proxy}").json()["toxics"]
    assert [t["name"] for t in shown] == ["u1", "u2", "d1", "d2"]


def test_empty_toxic_list_and_404(api, make_proxy):
    proxy = make_proxy()["name"]
    response = api.get(f"/proxies/{proxy}/toxics")
    assert response.status_code == 200 and response.content == b"[]"
    assert_error(api.get("/proxies/nope/toxics"), 404, "proxy not found")


def test_get_toxic(api, make_proxy):
    proxy = make_proxy()["name"]
    created = post_toxic(api, proxy, {"type": "latency", "attributes": {"latency": 5}}).json()
    response = api.get(f"/proxies/{proxy}/toxics/latency_downstream")
    assert response.status_code == 200 and response.json() == created
    assert_error(api.get(f"/proxies/{proxy}/toxics/nope"), 404, "toxic not found")
    assert_error(api.get("/proxies/nope/toxics/latency_downstream"), 404, "proxy not found")


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_update_merges_attributes(api, make_proxy, method):
    proxy = make_proxy()["name"]
    body = {"type": "latency", "toxicity": 0.5, "attributes": {"latency": 100, "jitter": 10}}
    post_toxic(api, proxy, body)
    path = f"/proxies/{proxy}/toxics/latency_downstream"
    update = {
        "attributes": {"latency": 200},
        "name": "ignored",
        "type": "noop",
        "stream": "upstream",
    }
    response = api.request(method, path, json=update)
    assert response.status_code == 200
    assert response.json() == {
        "attributes": {"latency": 200, "jitter": 10},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 0.5,
    }
    toxicity = api.request(method, path, json={"toxicity": 0.25}).json()
    assert toxicity["toxicity"] == 0.25 and toxicity["attributes"]["latency"] == 200


def test_update_errors(api, make_proxy):
    proxy = make_proxy()["name"]
    post_toxic(api, proxy, {"type": "latency"})
    path = f"/proxies/{proxy}/toxics/latency_downstream"
    assert_error(api.patch(path, data=b""), 400, "bad request body: EOF")
    bad = api.patch(path, data=b'{"attributes": {"latency": 1.5}}')
    assert bad.status_code == 400
    huge = api.patch(path, data=b'{"attributes": {"latency": ' + b"9" * 5000 + b"}}")
    assert huge.status_code == 400
    assert error_of(huge).startswith("bad request body: json: cannot unmarshal number 999")
    assert api.get(path).json()["attributes"]["latency"] == 0
    assert_error(api.patch(f"/proxies/{proxy}/toxics/nope", json={}), 404, "toxic not found")
    assert_error(api.patch("/proxies/nope/toxics/x", json={}), 404, "proxy not found")


def test_delete_toxic(api, make_proxy):
    proxy = make_proxy()["name"]
    post_toxic(api, proxy, {"type": "noop"})
    response = api.delete(f"/proxies/{proxy}/toxics/noop_downstream")
    assert response.status_code == 204 and response.content == b""
    assert_error(api.delete(f"/proxies/{proxy}/toxics/noop_downstream"), 404, "toxic not found")
    assert_error(api.delete("/proxies/nope/toxics/noop_downstream"), 404, "proxy not found")
    assert api.get(f"/proxies/{proxy}/toxics").json() == []


# -- where we deliberately do better than Go (it panics or recurses forever) ----------------


@pytest.mark.parametrize(
    ("type_", "attributes"),
    [
        ("bandwidth", {"rate": -1}),
        ("slicer", {"average_size": 0}),
        ("slicer", {"average_size": 4, "size_variation": 4}),
        ("slicer", {"average_size": 4, "size_variation": -1}),
    ],
)
def test_crashing_attributes_are_rejected(api, make_proxy, ours, type_, attributes):
    proxy = make_proxy()["name"]
    response = post_toxic(api, proxy, {"type": type_, "attributes": attributes})
    assert response.status_code == 400
    assert api.get(f"/proxies/{proxy}/toxics").json() == []


def test_crashing_update_is_rejected(api, make_proxy, ours):
    proxy = make_proxy()["name"]
    post_toxic(api, proxy, {"type": "bandwidth", "attributes": {"rate": 10}})
    path = f"/proxies/{proxy}/toxics/bandwidth_downstream"
    assert api.patch(path, json={"attributes": {"rate": -5}}).status_code == 400
    assert api.get(path).json()["attributes"] == {"rate": 10}
