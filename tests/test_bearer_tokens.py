"""MLflow clients with `Authorization: Bearer <ID token>`: the IdP's own tokens for this
client pass with the user's identity; every other token is refused before MLflow."""
import time

import pytest
import requests

from conftest import wait_past_jwks_refetch_limit
from helpers import (API, IDENTITY_HEADER, TIMEOUT, assert_unauthenticated, b64url_json, bearer,
                     claims_of, counters_named, hs256_with_public_key, id_token_for, marker,
                     signed_with_own_key, wasm_stats, with_alg_none)

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
# The filter counts in memory and flushes its counters to Envoy on a 1 s timer.
STATS_FLUSH_SECONDS = 2.5


def get(stack, headers, mark):
    return requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=headers, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def alice_token(stack):
    return id_token_for(stack.idp_url, "alice")


@pytest.fixture(scope="module")
def other_idp(stack):
    """A second IdP: same users, another issuer, another key."""
    issuer = stack.start_extra_idp("idp-other")
    yield issuer
    stack.stop_extra_idp("idp-other")


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_idp_token_reaches_mlflow_as_its_user(stack, access_log, user):
    mark = marker()
    r = get(stack, bearer(id_token_for(stack.idp_url, user)), mark)

    assert r.status_code == 200, r.text[:300]
    assert isinstance(r.json(), dict), r.text[:300]  # a search answer: rows only where a grant allows
    assert access_log.assert_mlflow_answered(mark)["user"] == f"{user}@example.com"


def test_client_sent_identity_header_is_replaced(stack, access_log, alice_token):
    mark = marker()
    r = get(stack, {**bearer(alice_token), IDENTITY_HEADER: "admin@example.com"}, mark)

    assert r.status_code == 200, r.text[:300]
    assert access_log.assert_mlflow_answered(mark)["user"] == "alice@example.com"


def test_token_from_another_issuer_is_refused(stack, access_log, other_idp):
    token = id_token_for(other_idp, "alice")
    assert claims_of(token)["iss"] == other_idp != stack.idp_url

    mark = marker()
    assert_unauthenticated(get(stack, bearer(token), mark))
    access_log.assert_mlflow_never_saw(mark)


def test_token_for_another_client_is_refused(stack, access_log):
    token = id_token_for(stack.idp_url, "alice", client_id="other-client")
    assert claims_of(token)["aud"] in ("other-client", ["other-client"])

    mark = marker()
    assert_unauthenticated(get(stack, bearer(token), mark))
    access_log.assert_mlflow_never_saw(mark)


def test_unsigned_token_is_refused(stack, access_log, alice_token):
    mark = marker()
    assert_unauthenticated(get(stack, bearer(with_alg_none(alice_token)), mark))
    access_log.assert_mlflow_never_saw(mark)


def test_hmac_token_keyed_with_the_idps_public_key_is_refused(stack, access_log, alice_token):
    mark = marker()
    assert_unauthenticated(get(stack, bearer(hs256_with_public_key(alice_token, stack.idp_url)), mark))
    access_log.assert_mlflow_never_saw(mark)


def test_token_with_altered_claims_is_refused(stack, access_log, alice_token):
    header, _, signature = alice_token.split(".")
    claims = {**claims_of(alice_token), "email": "admin@example.com", "sub": "admin"}
    mark = marker()
    assert_unauthenticated(get(stack, bearer(f"{header}.{b64url_json(claims)}.{signature}"), mark))
    access_log.assert_mlflow_never_saw(mark)


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer ..."])
def test_garbage_bearer_is_refused(stack, access_log, value):
    mark = marker()
    assert_unauthenticated(get(stack, {**API, "Authorization": value}, mark))
    access_log.assert_mlflow_never_saw(mark)


def test_token_signed_with_an_unknown_key_is_refused_after_one_jwks_refetch(stack, access_log, alice_token):
    wait_past_jwks_refetch_limit()
    before = jwks_fetch_counters(stack)
    assert before, f"no stats counter with 'jwks_fetch' in its name: {sorted(wasm_stats(stack))}"

    # Two tokens under unknown kids, back to back (well within the 1 s refetch interval).
    marks = [marker(), marker()]
    answers = [get(stack, bearer(signed_with_own_key(alice_token)), mark) for mark in marks]
    for answer, mark in zip(answers, marks):
        assert_unauthenticated(answer)
        access_log.assert_mlflow_never_saw(mark)

    # The first made the filter refetch the IdP's keys once; the second, rate-limited, did not.
    after = jwks_fetch_counters(stack, differing_from=before)
    time.sleep(STATS_FLUSH_SECONDS)  # would a second refetch show up late?
    after = jwks_fetch_counters(stack)
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert grew and max(grew.values()) == 1, f"expected one JWKS refetch, counters moved by {grew}"
    # And the IdP's own tokens still pass.
    assert get(stack, bearer(alice_token), marker()).status_code == 200


def jwks_fetch_counters(stack, differing_from=None, timeout=STATS_FLUSH_SECONDS):
    """The filter's counters named *jwks_fetch*. It flushes its counters to Envoy once a
    second, so with `differing_from`, wait up to `timeout` for them to move."""
    deadline = time.monotonic() + timeout
    while True:
        now = counters_named(wasm_stats(stack), "jwks_fetch")
        if differing_from is None or now != differing_from or time.monotonic() > deadline:
            return now
        time.sleep(0.2)
