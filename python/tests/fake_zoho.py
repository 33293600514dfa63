"""A fake Zoho accounts and CRM server on 127.0.0.1, for tests and the demo.

It speaks just enough of both APIs for the Zoho CRM Python SDK:

* ``POST /oauth/v2/token``: ``grant_type=refresh_token`` and
  ``grant_type=authorization_code``; unknown tokens get Zoho's
  ``{"error": "invalid_code"}``. ``rotate=True`` makes every refresh issue a
  new refresh token and retire the old one.
* ``POST /oauth/v2/token/revoke``: revokes a refresh token.
* ``GET /crm/v8/users?type=CurrentUser``: the user of the bearer token (the
  SDK asks it before saving a token without a user).
* ``GET /crm/v8/org``: the organization (its ``zgid`` completes the user
  name the SDK stores: ``email:zgid``).
* ``GET /crm/v8/Leads`` and any other CRM path: a tiny records response,
  only for a valid, unexpired access token.

Every request is recorded (``server.requests``) with secrets kept, so tests
can compare what the SDK sent with two different stores. Never a real Zoho
host: the SDK is pointed here with ``server.environment()``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

#: The organization id the fake CRM reports.
ORG_ZGID = "7000000001"


@dataclass
class Request:
    method: str
    path: str
    form: Dict[str, str] = field(default_factory=dict)
    query: Dict[str, str] = field(default_factory=dict)
    bearer: Optional[str] = None
    #: When it arrived (time.monotonic()); not part of ``key``.
    at: float = field(default=0.0, compare=False)

    def key(self) -> Tuple:
        """What identifies the request across runs (no timestamps)."""
        return (self.method, self.path, tuple(sorted(self.form.items())), tuple(sorted(self.query.items())), self.bearer)


@dataclass
class Client:
    secret: str
    # refresh token -> user e-mail
    refresh_tokens: Dict[str, str] = field(default_factory=dict)
    # grant code -> user e-mail
    grant_codes: Dict[str, str] = field(default_factory=dict)


class FakeZoho:
    """Start with ``with FakeZoho() as server:``; ``server.base`` is its URL."""

    def __init__(self, *, expires_in: int = 3600, rotate: bool = False) -> None:
        self.expires_in = expires_in
        self.rotate = rotate
        self.clients: Dict[str, Client] = {}
        # access token -> (user e-mail, expiry in epoch seconds)
        self.access_tokens: Dict[str, Tuple[str, float]] = {}
        self.requests: List[Request] = []
        self.revoked: List[str] = []
        self._counter = 0
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- set-up -------------------------------------------------------------

    def add_client(self, client_id: str, secret: str) -> None:
        self.clients[client_id] = Client(secret)

    def add_refresh_token(self, client_id: str, refresh_token: str, user: str) -> None:
        self.clients[client_id].refresh_tokens[refresh_token] = user

    def add_grant_code(self, client_id: str, code: str, user: str) -> None:
        self.clients[client_id].grant_codes[code] = user

    def add_access_token(self, access_token: str, user: str, expires_in: float = 3600) -> None:
        self.access_tokens[access_token] = (user, time.time() + expires_in)

    @property
    def base(self) -> str:
        assert self._httpd is not None, "start the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def accounts_url(self) -> str:
        return self.base + "/oauth/v2/token"

    def environment(self):
        """The SDK's Environment pointing at this server (imports the SDK)."""
        from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter

        return DataCenter.Environment(self.base, self.accounts_url, self.base)

    def start(self) -> "FakeZoho":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_GET(self) -> None:
                server._handle(self, "GET")

        class Server(ThreadingHTTPServer):
            # The default backlog of 5 resets connections when many threads
            # or processes call at once; the real servers do not.
            request_queue_size = 1024

            def handle_error(self, request, client_address) -> None:
                # A client killed mid-request (the gunicorn test SIGKILLs
                # workers) is no error of the server's.
                import sys

                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeZoho":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what tests look at --------------------------------------------------

    def token_requests(self) -> List[Request]:
        return [r for r in self.requests if r.path == "/oauth/v2/token"]

    def refreshes(self) -> List[Request]:
        return [r for r in self.token_requests() if r.form.get("grant_type") == "refresh_token"]

    # -- the protocol --------------------------------------------------------

    def _next(self, kind: str) -> str:
        self._counter += 1
        return f"1000.{kind}.{self._counter}"

    def _issue(self, client_id: str, user: str, with_refresh: bool) -> dict:
        access = self._next("access")
        self.access_tokens[access] = (user, time.time() + self.expires_in)
        body = {
            "access_token": access,
            "api_domain": self.base,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if with_refresh:
            refresh = self._next("refresh")
            self.clients[client_id].refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
        return body

    def _handle(self, http: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(http.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        form: Dict[str, str] = {}
        if method == "POST":
            length = int(http.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(http.rfile.read(length).decode()))
        auth = http.headers.get("Authorization")
        bearer = auth.split(" ", 1)[1] if auth and " " in auth else None
        with self._lock:
            self.requests.append(Request(method, url.path, form, query, bearer, time.monotonic()))
            status, body = self._respond(method, url.path, form, query, bearer)
        payload = json.dumps(body).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json;charset=UTF-8")
        http.send_header("Content-Length", str(len(payload)))
        http.end_headers()
        http.wfile.write(payload)

    def _respond(self, method, path, form, query, bearer) -> Tuple[int, dict]:
        if method == "POST" and path == "/oauth/v2/token":
            client = self.clients.get(form.get("client_id", ""))
            if client is None or client.secret != form.get("client_secret"):
                return 200, {"error": "invalid_client"}
            grant_type = form.get("grant_type")
            if grant_type == "refresh_token":
                refresh = form.get("refresh_token", "")
                user = client.refresh_tokens.get(refresh)
                if user is None:
                    return 200, {"error": "invalid_code"}
                body = self._issue(form["client_id"], user, with_refresh=self.rotate)
                if self.rotate:
                    del client.refresh_tokens[refresh]
                return 200, body
            if grant_type == "authorization_code":
                user = client.grant_codes.pop(form.get("code", ""), None)
                if user is None:
                    return 200, {"error": "invalid_code"}
                return 200, self._issue(form["client_id"], user, with_refresh=True)
            return 200, {"error": "unsupported_grant_type"}
        if method == "POST" and path == "/oauth/v2/token/revoke":
            # The SDK sends the token in the form, Zoho's docs in the query.
            token = form.get("token") or query.get("token", "")
            for client in self.clients.values():
                if client.refresh_tokens.pop(token, None) is not None:
                    self.revoked.append(token)
                    return 200, {"status": "success"}
            return 200, {"status": "failure", "error": "invalid_token"}
        if method == "GET" and path.startswith("/crm/"):
            user, expires = self.access_tokens.get(bearer or "", (None, 0.0))
            if user is None or expires < time.time():
                return 401, {
                    "code": "INVALID_TOKEN",
                    "details": {},
                    "message": "invalid oauth token",
                    "status": "error",
                }
            if path == "/crm/v8/users":
                return 200, {
                    "users": [{"id": "4150868000000225013", "email": user, "full_name": user}],
                    "info": {"per_page": 200, "count": 1, "page": 1, "more_records": False},
                }
            if path == "/crm/v8/org":
                return 200, {"org": [{"id": "4150868000000225000", "zgid": ORG_ZGID, "company_name": "Example"}]}
            return 200, {
                "data": [{"id": "4150868000000225001", "Last_Name": "Lead of " + user}],
                "info": {"per_page": 200, "count": 1, "page": 1, "more_records": False},
            }
        return 404, {"code": "NOT_FOUND", "status": "error", "message": "no such path", "details": {}}
