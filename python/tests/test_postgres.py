"""``postgres://`` stores from Python: the shared store for several worker
processes (a throw-away PostgreSQL server on 127.0.0.1; see conftest)."""

from __future__ import annotations

import multiprocessing
import sys

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, REFRESH, USER, now_ms

import tokenstore
from tokenstore import Token

WORKERS = 8


def test_the_plain_api_on_postgres(pg_url):
    with tokenstore.open(pg_url) as store:
        assert store.kind == "postgres"
        saved = store.save(Token(user_name=USER, refresh_token=REFRESH, client_id=CLIENT_ID, client_secret=CLIENT_SECRET))
        assert saved.id == "1" and store.find(user_name=USER) == saved
        with pytest.raises(tokenstore.ConflictError):
            store.save(Token(user_name="bob", refresh_token=REFRESH))
    # A second process and this one share it at once.
    with tokenstore.open(pg_url) as a, tokenstore.open(pg_url) as b:
        a.save(Token(user_name="carl", refresh_token="1000.c"))
        assert b.find(user_name="carl") is not None


def _save_same_user(url, barrier, results):
    import tokenstore as ts

    with ts.open(url) as store:
        barrier.wait()
        saved = store.save(ts.Token(user_name="race@example.com", access_token=f"1000.a.{multiprocessing.current_process().name}"))
        results.put(saved.id)


def test_8_processes_saving_the_same_new_user_make_one_record(pg_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_save_same_user, args=(pg_url, barrier, results)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    ids = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert len(set(ids)) == 1
    with tokenstore.open(pg_url) as store:
        assert len(store.all()) == 1


def _sdk_get_token(url, base, barrier, results):
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

    from tokenstore.zoho import Store

    store = Store(url, refresh=True)
    env = DataCenter.Environment(base, base + "/oauth/v2/token", base)
    Initializer.initialize(environment=env, token=OAuthToken(user_signature=UserSignature("warm@example.com")), store=store)
    barrier.wait()
    results.put(OAuthToken(user_signature=UserSignature(USER)).get_token())


def test_8_worker_processes_cause_one_refresh_with_refresh_opt_in(pg_url, server):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    server.add_access_token("1000.access.warm", "warm@example.com")
    with tokenstore.open(pg_url) as store:
        store.save(Token(user_name=USER, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH,
                         access_token="1000.access.old", expiry_time=now_ms() - 1))
        store.save(Token(user_name="warm@example.com", access_token="1000.access.warm", expiry_time=now_ms() + 3_600_000))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_sdk_get_token, args=(pg_url, server.base, barrier, results)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    tokens = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert len(server.refreshes()) == 1
    assert len(set(tokens)) == 1 and tokens[0] != "1000.access.old"


def _tables(url):
    import subprocess

    out = subprocess.run(["psql", url, "-Atq", "-c", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"],
                         check=True, capture_output=True, text=True)
    return int(out.stdout)


def test_create_false_needs_the_tables(pg_url):
    with pytest.raises(tokenstore.Error) as raised:
        tokenstore.open(pg_url, create=False)
    assert type(raised.value) is tokenstore.Error and "nothing was created" in str(raised.value)
    assert _tables(pg_url) == 0
    tokenstore.open(pg_url).close()
    assert _tables(pg_url) > 0
    with tokenstore.open(pg_url, create=False) as store:
        assert store.all() == []
