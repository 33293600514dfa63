"""The real Zoho CRM Python SDK, keeping its tokens in tokenstore, against a
fake Zoho accounts and CRM server on 127.0.0.1 (no Zoho account needed,
nothing leaves this machine).

    pip install ./python zohocrmsdk8-0
    python python/examples/zoho_sdk_demo.py [STORE_DIR]

It initializes the SDK with a refresh token, makes an API call, lets the
access token expire and shows the SDK refreshing it and tokenstore saving
the new one onto the same record, then a second "process start" that finds
the token by user name. Secrets are never printed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from fake_zoho import FakeZoho  # noqa: E402  (the tests' fake server)

from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.users import GetUsersParam, UsersOperations  # noqa: E402

from tokenstore.zoho import Store  # noqa: E402

CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN = "1000.DEMO", "demo-client-secret", "1000.demo-refresh-token"


def list_users() -> str:
    params = ParameterMap()
    params.add(GetUsersParam.type, "AllUsers")
    response = UsersOperations().get_users(params, HeaderMap())
    return ", ".join(u.get_email() for u in response.get_object().get_users())


def show(store: Store) -> None:
    for t in store.tokens.all():
        left = (t.expiry_time - int(time.time() * 1000)) // 1000 if t.expiry_time else None
        print(f"    stored: {t!r}  (access token valid for {left} s)")


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.mkdtemp(), "tokens")
    with FakeZoho(expires_in=3600) as zoho:
        zoho.add_client(CLIENT_ID, CLIENT_SECRET)
        zoho.add_refresh_token(CLIENT_ID, REFRESH_TOKEN, "ana@example.com")
        print(f"fake Zoho on {zoho.base}; tokens in {directory}")

        store = Store(directory)  # the three lines: a Store ...
        token = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH_TOKEN)
        Initializer.initialize(environment=zoho.environment(), token=token, store=store)  # ... plugged in
        print("1. initialized with a refresh token; users:", list_users())
        show(store)

        # The access token expires: the SDK refreshes it and tokenstore saves
        # the new one onto the same record (by id).
        record = store.tokens.get(token.get_id())
        store.tokens.save(type(record)(id=record.id, access_token=record.access_token, expiry_time=int(time.time() * 1000) - 1))
        Initializer.initialize(environment=zoho.environment(), token=OAuthToken(id=token.get_id()), store=store)
        print("2. after expiry, refreshed; users:", list_users())
        show(store)

        # A later start knows only the user: the record is found by name.
        user = store.tokens.get(token.get_id()).user_name
        Initializer.initialize(environment=zoho.environment(), token=OAuthToken(user_signature=UserSignature(user)), store=store)
        print("3. found by user name; users:", list_users())
        show(store)

        refreshes = len(zoho.refreshes())
        print(f"requests to the accounts server: {refreshes} refreshes; to the CRM: "
              f"{sum(r.path.startswith('/crm/') for r in zoho.requests)} calls")
        store.close()


if __name__ == "__main__":
    main()
