#!/usr/bin/env python3
"""A local stand-in for Microsoft Graph's `GET /v1.0/me/memberOf`, for the tests.

It identifies the user the way Graph does, by the bearer access token: it asks the
test IdP's `/userinfo` with that token (oidc-provider-mock's access tokens are opaque)
and takes the `sub`. It then serves that user's memberships from a JSON file, in
Graph's collection format, `--page-size` objects a page, linked by `@odata.nextLink`:

    {"value": [{"@odata.type": "#microsoft.graph.group", "id": ..., "displayName": ...}, ...],
     "@odata.nextLink": "<base>/me/memberOf?$skiptoken=..."}

Each page also carries one directory object without a displayName (skipped by clients).

The file maps sub -> a list of group names, or an object {"status": N, "page": K}: answer
HTTP N (Graph's error shape) on page K (0-based; default 0) instead of the page.

Usage: graph_standin.py --port PORT --idp-url URL --groups FILE [--page-size 100]
Also serves GET /health.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = "/v1.0/me/memberOf"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idp-url", required=True)
    parser.add_argument("--groups", required=True, help="JSON file: sub -> groups")
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args(argv)
    base = f"http://127.0.0.1:{args.port}/v1.0"
    userinfo_url = args.idp_url.rstrip("/") + "/userinfo"

    def subject(token: str) -> str | None:
        req = urllib.request.Request(userinfo_url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read()).get("sub")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, status: int, code: str, message: str) -> None:
            self.reply(status, {"error": {"code": code, "message": message}})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/health":
                return self.reply(200, {"status": "ok"})
            if url.path != PATH:
                return self.error(404, "Request_ResourceNotFound", f"no {url.path}")
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            sub = subject(token) if token else None
            if sub is None:
                return self.error(401, "InvalidAuthenticationToken",
                                  "Access token is empty or invalid.")
            with open(args.groups) as f:
                users = json.load(f)
            entry = users.get(sub, [])
            query = urllib.parse.parse_qs(url.query)
            page = int(query.get("$skiptoken", ["0"])[0])
            if isinstance(entry, dict):
                if page == int(entry.get("page", 0)):
                    return self.error(int(entry["status"]), "generalException",
                                      f"stand-in failure for {sub}")
                groups = entry.get("groups", [])
            else:
                groups = entry
            size = args.page_size
            chunk = groups[page * size:(page + 1) * size]
            value = [{"@odata.type": "#microsoft.graph.group", "id": f"{sub}-{page}-{i}",
                      "displayName": name} for i, name in enumerate(chunk)]
            value.append({"@odata.type": "#microsoft.graph.directoryRole", "id": f"role-{page}"})
            body = {"@odata.context": f"{base}/$metadata#directoryObjects", "value": value}
            more = (page + 1) * size < len(groups) or (
                isinstance(entry, dict) and page < int(entry.get("page", 0)))
            if more:
                body["@odata.nextLink"] = f"{base}/me/memberOf?$skiptoken={page + 1}"
            self.reply(200, body)

        def log_message(self, fmt: str, *a) -> None:
            sys.stderr.write(f"graph-standin: {self.command} {self.path} -> {fmt % a}\n")

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"graph stand-in on {base} (users from {args.groups})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
