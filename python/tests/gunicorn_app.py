"""The WSGI app ``test_gunicorn.py`` runs under real gunicorn and
``test_uwsgi.py`` under real uWSGI, and whose ``crm()`` the Celery tasks of
``celery_app.py`` call: what a Kaizen #192 reader's Flask app does (the Zoho
CRM SDK on ``tokenstore.zoho.Store``, opened at import), as a plain WSGI
callable.

Configured by the environment: ``TOKENS_DB`` (the store's directory),
``FAKE_ZOHO`` (the fake Zoho server's base URL), ``ZOHO_USERS`` (the users
seeded in the store, comma-separated), ``SDK_RESOURCES`` (the SDK's resource
directory).

* ``GET /crm``: a CRM API call through the SDK for the first user (the SDK
  asks the store for the token, ``refresh=True`` refreshes it single-flight)
  and, for every other user, ``OAuthToken(...).get_token()`` checked at the
  fake CRM. 200 with ``{"pid": ...}``; 500 with the error otherwise.
* ``GET /whoami``: this worker's pid, its parent's, and the store's sharing
  info (``role``, ``owner_pid``, ``clients``).
"""

from __future__ import annotations

import json
import os
import urllib.request

from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature
from zohocrmsdk.src.com.zoho.crm.api.users import GetUsersParam, UsersOperations

from tokenstore.zoho import Store

BASE = os.environ["FAKE_ZOHO"]
USERS = os.environ["ZOHO_USERS"].split(",")

# As the app's README tells it: open the store at import, like FileStore.
store = Store(os.environ["TOKENS_DB"], refresh=True)
Initializer.initialize(
    environment=DataCenter.Environment(BASE, BASE + "/oauth/v2/token", BASE),
    token=OAuthToken(user_signature=UserSignature(USERS[0])),
    store=store,
    resource_path=os.environ["SDK_RESOURCES"],
)


def crm() -> dict:
    params = ParameterMap()
    params.add(GetUsersParam.type, "CurrentUser")
    response = UsersOperations().get_users(params, HeaderMap())
    if response.get_status_code() != 200:
        raise RuntimeError(f"the SDK's API call got HTTP {response.get_status_code()}")
    emails = [u.get_email() for u in response.get_object().get_users()]
    if emails != [USERS[0]]:
        raise RuntimeError(f"the SDK's API call answered for {emails}, not {USERS[0]}")
    for user in USERS[1:]:
        access = OAuthToken(user_signature=UserSignature(user)).get_token()
        request = urllib.request.Request(BASE + "/crm/v8/Leads", headers={"Authorization": f"Zoho-oauthtoken {access}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.load(answer)
        if body["data"][0]["Last_Name"] != "Lead of " + user:
            raise RuntimeError(f"the token handed out for {user} belongs to someone else")
    return {"pid": os.getpid()}


def whoami() -> dict:
    info = store.tokens.info()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "role": info["role"],
        "owner_pid": info["owner_pid"],
        "clients": info["clients"],
    }


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    try:
        if path == "/crm":
            status, body = "200 OK", crm()
        elif path == "/whoami":
            status, body = "200 OK", whoami()
        else:
            status, body = "404 Not Found", {"error": "no such path"}
    except Exception as e:  # noqa: BLE001 - reported to the test
        cause = getattr(e, "cause", None) or e.__cause__
        status, body = "500 Internal Server Error", {"pid": os.getpid(), "error": f"{e!r}"[:300], "cause": f"{cause!r}"[:300]}
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
