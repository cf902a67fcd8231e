"""Search answers hold only what the caller may read, in full pages: MLflow pages over
everything, the filter and the policy service drop the rest and top pages up."""
from __future__ import annotations

import concurrent.futures
import uuid

import pytest
import requests

from helpers import API, TIMEOUT, access_token, client_env, grant, login, new_idp_user, run_client_script
from local_stack import USER_GROUP

TOTAL, READABLE, PAGE = 2000, 50, 10

PAGES = r"""
import json, sys
from mlflow import MlflowClient
c = MlflowClient()
prefix, page = sys.argv[1], int(sys.argv[2])
pages, token = [], None
while True:
    got = c.search_experiments(max_results=page, page_token=token, filter_string=f"name LIKE '{prefix}%'")
    pages.append([e.name for e in got])
    token = got.token
    if not token:
        break
print(json.dumps(pages))
"""


@pytest.fixture(scope="module")
def many(stack):
    """TOTAL experiments made straight in MLflow (no owner), every 40th readable by a user."""
    prefix = f"many-{uuid.uuid4().hex[:6]}-"
    names = [f"{prefix}{i:04d}" for i in range(TOTAL)]

    def create(name):
        r = requests.post(f"{stack.mlflow_url}/api/2.0/mlflow/experiments/create", json={"name": name},
                          timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
        return name, r.json()["experiment_id"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ids = dict(pool.map(create, names))
    readable = names[7::TOTAL // READABLE][:READABLE]
    admin = login(stack, "admin")
    sub = new_idp_user(stack, [USER_GROUP], "searcher")
    for name in readable:
        grant(stack, admin, f"{sub}@example.com", ids[name], "READ")
    browser = login(stack, sub)
    env = client_env(f"{sub}@example.com", access_token(stack, browser))
    return {"prefix": prefix, "readable": readable, "env": env, "browser": browser, "ids": ids}


def test_search_returns_every_readable_experiment_in_full_pages(stack, many):
    pages = run_client_script(stack, many["env"], PAGES, many["prefix"], str(PAGE))
    seen = [name for page in pages for name in page]
    assert sorted(seen) == sorted(many["readable"]), "missing or unreadable experiments in the search"
    assert len(seen) == len(set(seen)), "an experiment came twice across pages"
    assert [len(p) for p in pages[:-1]] == [PAGE] * (len(pages) - 1), f"pages not full: {[len(p) for p in pages]}"


def test_the_raw_rest_answer_is_filtered_too(stack, many):
    r = many["browser"].get(f"{stack.url}/api/2.0/mlflow/experiments/search",
                            params={"max_results": 1000, "filter": f"name LIKE '{many['prefix']}%'"},
                            headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    names = [e["name"] for e in r.json().get("experiments", [])]
    assert sorted(names) == sorted(many["readable"])


def test_an_admin_sees_everything(stack, many):
    admin = login(stack, "admin")
    r = admin.get(f"{stack.url}/api/2.0/mlflow/experiments/search",
                  params={"max_results": 3000, "filter": f"name LIKE '{many['prefix']}%'"}, headers=API,
                  timeout=TIMEOUT)
    assert r.status_code == 200 and len(r.json()["experiments"]) == TOTAL

