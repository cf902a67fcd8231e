#!/usr/bin/env python3
"""Throughput of the filter in real Envoy, against Envoy without it (`make bench`).

One Envoy under test (one worker, pinned to CPU 0) has a listener per case; wrk
(pinned to CPU 1) drives each in turn, cases interleaved over several rounds. A
second Envoy plays the fast upstream, the IdP (discovery + JWKS) and the policy
service (decide, epoch) as direct responses; every request is a READ on experiment 1. Prints req/s and Envoy CPU per request, each as a ratio to the same
path without a filter. Figures, not a pass/fail test.
"""
import argparse
import base64
import json
import os
import pathlib
import shutil
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import jwt  # pyjwt
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENVOY = str(ROOT / ".venv/bin/envoy")
FILTER = ROOT / "target/wasm32-wasip1/release/mlflow_edge_authz.wasm"
NOOP = ROOT / "target/wasm32-wasip1/release/noop_filter.wasm"
KID = "bench-key"
TOKENS = 20000
# What every request asks: a READ decision on experiment 1 (the common case of an MLflow
# client or the UI reading an experiment), cached after each user's first request.
BENCH_PATH = "/api/2.0/mlflow/experiments/get?experiment_id=1"


def b64u_int(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def addr(port):
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def cluster(name, port):
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(port)}}]}]},
    }


def hcm(name, routes, filters):
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name, "codec_type": "AUTO",
            "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
            "http_filters": filters + [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        },
    }


def listener(name, port, routes, filters):
    return {"name": name, "address": addr(port), "filter_chains": [{"filters": [hcm(name, routes, filters)]}]}


def wasm(name, path, config):
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": name, "root_id": name, "failure_policy": "FAIL_RELOAD",
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(config)},
            "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(path)}}},
        }}}


def jwt_authn(issuer, jwks, cache):
    provider = {"issuer": issuer, "audiences": ["mlflow"], "local_jwks": {"inline_string": json.dumps(jwks)}, "forward": True}
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"idp": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]}}


DIRECT = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]
PROXIED = [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--only", default="", help="comma list of case names")
    args = ap.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is not installed (make bench-deps)")

    work = pathlib.Path(tempfile.mkdtemp(prefix="mlflow-authz-bench-"))
    base = 21000
    up_port, up_admin, bench_admin = base, base + 1, base + 2
    issuer = f"http://127.0.0.1:{up_port}"

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig", "n": b64u_int(pub.n), "e": b64u_int(pub.e)}]}

    def token(i):
        claims = {"iss": issuer, "aud": "mlflow", "sub": f"user-{i}", "email": f"user{i}@example.com",
                  "iat": int(time.time()), "exp": int(time.time()) + 3600}
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})

    head, body, _ = token(0).split(".")
    template = json.loads(base64.urlsafe_b64decode(body + "=="))

    def forge(i):
        """Right header and claims, a signature of random bytes: only the check can tell."""
        claims = dict(template)
        claims["sub"] = f"forged-{i}"
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"{head}.{body}.{base64.urlsafe_b64encode(secrets.token_bytes(256)).rstrip(b'=').decode()}"

    print(f"minting {TOKENS} valid and {2 * TOKENS} forged RS256 tokens ...", flush=True)
    valid = [token(i) for i in range(TOKENS)]
    forged = [forge(i) for i in range(2 * TOKENS)]
    (work / "valid.txt").write_text("\n".join(valid) + "\n")
    (work / "forged.txt").write_text("\n".join(forged) + "\n")
    (work / "one.txt").write_text(valid[0] + "\n")
    (work / "one-forged.txt").write_text(forged[0] + "\n")
    (work / "none.txt").write_text("\n")
    lua = work / "tokens.lua"
    lua.write_text(f"""
local PATH = "{BENCH_PATH}"
""" + """
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do if #line > 0 then tokens[#tokens + 1] = line end end
-- Each run starts where the last run of its case stopped: a "new" token is never one
-- an earlier run already got verified (and cached).
local i = tonumber(os.getenv("TOKENS_OFFSET") or "0")
request = function()
  if #tokens == 0 then return wrk.format("GET", PATH) end
  i = i + 1
  return wrk.format("GET", PATH, {["Authorization"] = "Bearer " .. tokens[(i - 1) % #tokens + 1]})
end
""")

    # The upstream, the IdP and the policy service: a second Envoy with direct responses.
    # Every user may READ experiment 1, at an epoch that never moves: after the first
    # request of a user, decisions come from the filter's cache.
    discovery = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"}
    decided = {"epoch": 1, "admin": False,
               "answers": [{"permission": "READ", "source": "user", "resource": {"kind": "experiment", "id": "1"}}]}
    up_routes = [
        {"match": {"path": "/.well-known/openid-configuration"}, "direct_response": {"status": 200, "body": {"inline_string": json.dumps(discovery)}}},
        {"match": {"path": "/jwks"}, "direct_response": {"status": 200, "body": {"inline_string": json.dumps(jwks)}}},
        {"match": {"path": "/authz/v1/decide"}, "direct_response": {"status": 200, "body": {"inline_string": json.dumps(decided)}}},
        {"match": {"path": "/authz/v1/epoch"}, "direct_response": {"status": 200, "body": {"inline_string": json.dumps({"epoch": 1})}}},
    ] + DIRECT
    up_conf = {"admin": {"address": addr(up_admin)}, "static_resources": {"listeners": [listener("up", up_port, up_routes, [])]}}

    filter_conf = {
        "oidc_discovery_url": f"{issuer}/.well-known/openid-configuration",
        "oidc_audience": ["mlflow"], "idp_cluster": "upstream", "policy_service_cluster": "upstream",
    }
    # name: (routes, filters, tokens file)
    cases = {
        "none": (DIRECT, [], "none.txt"),
        "wasm-noop": (DIRECT, [wasm("noop", NOOP, {})], "one.txt"),
        "filter-cached": (DIRECT, [wasm("authz", FILTER, filter_conf)], "one.txt"),
        "filter-new-token": (DIRECT, [wasm("authz", FILTER, filter_conf)], "valid.txt"),
        "filter-forged-replayed": (DIRECT, [wasm("authz", FILTER, filter_conf)], "one-forged.txt"),
        "filter-forged-distinct": (DIRECT, [wasm("authz", FILTER, filter_conf)], "forged.txt"),
        "jwt_authn": (DIRECT, [jwt_authn(issuer, jwks, False)], "one.txt"),
        "jwt_authn-cache": (DIRECT, [jwt_authn(issuer, jwks, True)], "one.txt"),
        "up:none": (PROXIED, [], "none.txt"),
        "up:wasm-noop": (PROXIED, [wasm("noop", NOOP, {})], "one.txt"),
        "up:filter-cached": (PROXIED, [wasm("authz", FILTER, filter_conf)], "one.txt"),
        "up:jwt_authn-cache": (PROXIED, [jwt_authn(issuer, jwks, True)], "one.txt"),
    }
    if args.only:
        keep = set(args.only.split(",")) | {"none", "up:none"}
        cases = {k: v for k, v in cases.items() if k in keep}
    ports = {name: base + 10 + i for i, name in enumerate(cases)}
    bench_conf = {
        "admin": {"address": addr(bench_admin)},
        "static_resources": {
            "listeners": [listener(n.replace(":", "-"), ports[n], r, f) for n, (r, f, _) in cases.items()],
            "clusters": [cluster("upstream", up_port)],
        },
    }
    (work / "up.json").write_text(json.dumps(up_conf))
    (work / "bench.json").write_text(json.dumps(bench_conf))

    procs = []

    def envoy(conf, cpu, admin, log):
        p = subprocess.Popen(["taskset", "-c", str(cpu), ENVOY, "-c", str(work / conf), "--concurrency", "1",
                              "--disable-hot-restart", "-l", "warning", "--log-path", str(work / log)])
        procs.append(p)
        for _ in range(100):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1).read().strip() == b"LIVE":
                    return p
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit(f"bench: envoy {conf} did not become ready; see {work / log}")

    try:
        envoy("up.json", 1, up_admin, "up.log")
        bench = envoy("bench.json", 0, bench_admin, "bench.log")

        def cpu_ticks():
            fields = (pathlib.Path(f"/proc/{bench.pid}/stat").read_text().rsplit(")", 1)[1]).split()
            return int(fields[11]) + int(fields[12])

        tick = os.sysconf("SC_CLK_TCK")
        results = {name: [] for name in cases}
        offsets = {name: 0 for name in cases}
        for name, (_, _, tokens) in cases.items():  # warm-up: JWKS fetch, V8 tiering
            _, offsets[name] = run_wrk(ports[name], tokens, work, lua, 1, 0)
        for rnd in range(args.rounds):
            for name, (_, _, tokens) in cases.items():
                t0 = cpu_ticks()
                rps, requests = run_wrk(ports[name], tokens, work, lua, args.seconds, offsets[name])
                offsets[name] += requests
                cpu_us = (cpu_ticks() - t0) / tick * 1e6 / max(requests, 1)
                results[name].append((rps, cpu_us))
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
        stats = urllib.request.urlopen(f"http://127.0.0.1:{bench_admin}/stats?filter=mlflow_authz").read().decode()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)

    print(f"\nEnvoy 1 worker on CPU 0, wrk -t1 -c2 on CPU 1, {args.rounds} rounds x {args.seconds} s, medians")
    print(f"{'case':26} {'req/s':>9} {'x none':>7} {'CPU us/req':>10} {'x none (CPU)':>12}")
    for name, rows in results.items():
        rps = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        base_name = "up:none" if name.startswith("up:") else "none"
        brps = statistics.median(r for r, _ in results[base_name])
        bcpu = statistics.median(c for _, c in results[base_name])
        print(f"{name:26} {rps:9.0f} {rps / brps:7.2f} {cpu:10.1f} {bcpu / cpu:12.2f}")
    print("\nfilter counters:", " ".join(line.split(".", 1)[1] for line in stats.split("\n") if line))
    shutil.rmtree(work, ignore_errors=True)


def run_wrk(port, tokens, work, lua, seconds, offset):
    env = dict(os.environ, TOKENS_FILE=str(work / tokens), TOKENS_OFFSET=str(offset))
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c2", f"-d{seconds}s", "-s", str(lua),
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, env=env, check=True).stdout
    rps = float(next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")))
    requests = int(next(l.split()[0] for l in out.splitlines() if "requests in" in l))
    return rps, requests


if __name__ == "__main__":
    main()
