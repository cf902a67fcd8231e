"""OIDC_PROVISION_ON_BEARER_AUTH: an MLflow client with an IdP token for a user who never
used the browser. The filter shows each new bearer token to the policy service once;
the service creates the user if the group gate admits them, refuses them otherwise.

Envoy and the policy service run with the setting for this module only."""
import pytest
import requests

from helpers import API, TIMEOUT, assert_unauthenticated, bearer, id_token_for, login, marker, new_idp_user

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def provisioning(stack):
    service_env, filter_overrides = dict(stack.service_env), dict(stack.filter_overrides)
    stack.stop_service()
    stack.stop_envoy()
    stack.service_env = {**service_env, "OIDC_PROVISION_ON_BEARER_AUTH": "true"}
    stack.filter_overrides = {**filter_overrides, "oidc_provision_on_bearer_auth": True}
    stack.start_service()
    stack.start_envoy()
    try:
        yield
    finally:
        stack.stop_service()
        stack.stop_envoy()
        stack.service_env, stack.filter_overrides = service_env, filter_overrides
        stack.start_service()
        stack.start_envoy()


def known_to_the_service(stack, admin, user: str) -> bool:
    r = admin.get(f"{stack.url}/api/2.0/mlflow/users/{user}@example.com/tokens", headers=API, timeout=TIMEOUT)
    assert r.status_code in (200, 404), r.text[:300]
    return r.status_code == 200


def test_a_new_user_in_an_allowed_group_is_created_on_first_bearer_call(stack, access_log, provisioning):
    admin = login(stack, "admin")
    user = new_idp_user(stack, ["mlflow"], "bearer")
    assert not known_to_the_service(stack, admin, user)

    mark = marker()
    r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=bearer(id_token_for(stack.idp_url, user)),
                     timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    assert access_log.assert_mlflow_answered(mark)["user"] == f"{user}@example.com"
    assert known_to_the_service(stack, admin, user)


def test_a_user_outside_the_allowed_groups_is_refused(stack, access_log, provisioning):
    admin = login(stack, "admin")
    user = new_idp_user(stack, ["other"], "bearer")
    mark = marker()
    r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=bearer(id_token_for(stack.idp_url, user)),
                     timeout=TIMEOUT)
    assert_unauthenticated(r)
    assert "not in a group allowed" in r.json()["message"], r.text
    access_log.assert_mlflow_never_saw(mark)
    assert not known_to_the_service(stack, admin, user)


def test_without_the_service_new_bearer_tokens_wait_and_checked_ones_pass(stack, access_log, provisioning):
    checked = id_token_for(stack.idp_url, "alice")
    assert requests.get(stack.url + SEARCH, headers=bearer(checked), timeout=TIMEOUT).status_code == 200
    fresh = id_token_for(stack.idp_url, "bob")
    stack.stop_service()
    try:
        # The checked token still authenticates (a route that needs no permission).
        assert requests.get(stack.url + "/version", headers=bearer(checked), timeout=TIMEOUT).status_code == 200
        mark = marker()
        r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=bearer(fresh), timeout=TIMEOUT)
        assert r.status_code == 503, r.text[:300]
        access_log.assert_mlflow_never_saw(mark)
    finally:
        stack.start_service()
