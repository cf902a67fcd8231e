#!/usr/bin/env python3
"""The test IdP behind a front that adds claims to its UserInfo answers only, for the tests.

oidc-provider-mock puts the same claims in the ID token and in UserInfo, so a test
cannot tell which one the policy service read. This front forwards everything to the
IdP (keeping the Host header, so the IdP's issuer is the front's own URL), except:

* the discovery document, whose `userinfo_endpoint` it points at itself, and
* that endpoint: the IdP's UserInfo answer for the same access token, merged with the
  extra claims the JSON file gives for its `sub` (sub -> {claim: value}; a `sub` among
  them replaces the IdP's, to play a UserInfo that speaks for someone else).

Usage: userinfo_standin.py --port PORT --idp-url URL --claims FILE
Also serves GET /health.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USERINFO = "/userinfo-with-extra-claims"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idp-url", required=True)
    parser.add_argument("--claims", required=True, help="JSON file: sub -> extra UserInfo claims")
    args = parser.parse_args(argv)
    with open(args.claims) as f:
        extra = json.load(f)
    opener = urllib.request.build_opener(NoRedirect)
    idp = args.idp_url.rstrip("/")

    class Front(BaseHTTPRequestHandler):
        def forward(self, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            request = urllib.request.Request(idp + path, data=body, method=method, headers=headers)
            try:
                with opener.open(request, timeout=10) as r:
                    return r.status, list(r.headers.items()), r.read()
            except urllib.error.HTTPError as e:
                return e.code, list(e.headers.items()), e.read()

        def answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def handle_any(self, method: str) -> None:
            if self.path == "/health":
                return self.answer(200, [("Content-Type", "text/plain")], b"ok")
            if self.path == USERINFO:
                status, headers, body = self.forward(method, "/userinfo")
                if status == 200:
                    claims = json.loads(body)
                    claims.update(extra.get(claims.get("sub"), {}))
                    body = json.dumps(claims).encode()
                return self.answer(status, headers, body)
            status, headers, body = self.forward(method, self.path)
            if self.path.startswith("/.well-known/openid-configuration") and status == 200:
                document = json.loads(body)
                document["userinfo_endpoint"] = document["issuer"].rstrip("/") + USERINFO
                body = json.dumps(document).encode()
            self.answer(status, headers, body)

        def do_GET(self):  # noqa: N802 (http.server's names)
            self.handle_any("GET")

        def do_POST(self):  # noqa: N802
            self.handle_any("POST")

        def log_message(self, fmt, *args):
            sys.stderr.write("userinfo-standin: " + fmt % args + "\n")

    ThreadingHTTPServer(("127.0.0.1", args.port), Front).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
