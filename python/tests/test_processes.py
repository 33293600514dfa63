"""Threads, processes, fork, and the package without the SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, together

import tokenstore
from tokenstore import Token

THREADS = 16


def test_16_threads_share_one_store(tmp_path):
    """Each thread saves its own users, races every other thread on shared
    ones, and reads back; no lost update, no duplicate, no mix-up."""
    with tokenstore.open(tmp_path / "db") as store:
        def worker(n: int) -> None:
            for i in range(20):
                mine = store.save(Token(user_name=f"u{n}-{i}", refresh_token=f"1000.r.{n}.{i}", client_id="c", client_secret="s"))
                assert store.find(user_name=f"u{n}-{i}") == mine
                # Everyone saves the same new shared users at once.
                store.save(Token(user_name=f"shared-{i}", access_token=f"1000.a.{i}.{n}"))
                got = store.get(mine.id)
                assert got is not None and got.refresh_token == f"1000.r.{n}.{i}"

        _, errors = together(THREADS, worker)
        assert errors == []
        tokens = store.all()
        assert len(tokens) == THREADS * 20 + 20
        assert len({t.id for t in tokens}) == len(tokens)
        shared = [t for t in tokens if t.user_name.startswith("shared-")]
        assert sorted(t.user_name for t in shared) == sorted(f"shared-{i}" for i in range(20))


def test_native_calls_release_the_gil(tmp_path):
    """With a switch interval of 30 s, the interpreter never takes the GIL
    from the main thread by force; a second thread runs only while the main
    thread releases it, i.e. inside the native calls."""
    with tokenstore.open(tmp_path / "db") as store:
        stop = threading.Event()
        ticks = [0]

        def spin() -> None:
            while not stop.is_set():
                ticks[0] += 1
                time.sleep(0)

        old = sys.getswitchinterval()
        spinner = threading.Thread(target=spin)
        sys.setswitchinterval(30)
        try:
            spinner.start()
            before = ticks[0]
            for i in range(20):
                store.save(Token(user_name=f"u{i}", refresh_token=f"r{i}"))
                store.find(user_name=f"u{i}")
            during = ticks[0] - before
        finally:
            stop.set()
            sys.setswitchinterval(old)
        spinner.join()
        assert during > 0


def run_python(code: str, timeout: float = 60, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_a_second_process_gets_a_clear_error_at_once(tmp_path):
    db = str(tmp_path / "db")
    with tokenstore.open(db) as store:
        store.save(Token(user_name="ana", refresh_token="1000.r"))
        started = time.monotonic()
        child = run_python(
            f"""
            import tokenstore, time
            t = time.monotonic()
            try:
                tokenstore.open({db!r})
            except tokenstore.LockedError as e:
                print("LOCKED", round(time.monotonic() - t, 3), e)
            """,
            timeout=30,
        )
        elapsed = time.monotonic() - started
        assert child.returncode == 0, child.stderr
        assert child.stdout.startswith("LOCKED"), child.stdout + child.stderr
        assert "postgres://" in child.stdout
        assert elapsed < 30
        # The first process is unaffected.
        assert store.find(user_name="ana").refresh_token == "1000.r"
    # Once closed, the other process may open it.
    child = run_python(f"import tokenstore; print(tokenstore.open({db!r}).find(user_name='ana').id)")
    assert child.stdout.strip() == "1", child.stderr


def test_the_zoho_store_in_a_second_process(tmp_path):
    db = str(tmp_path / "db")
    from tokenstore.zoho import Store

    with Store(db):
        child = run_python(
            f"""
            from tokenstore.zoho import Store
            from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException
            try:
                Store({db!r})
            except SDKException as e:
                print(e.code, "postgres://" in str(e))
            """
        )
    assert child.stdout.split() == ["TOKEN_STORE", "True"], child.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_store_used_after_fork_raises_and_the_parent_is_intact(tmp_path):
    store = tokenstore.open(tmp_path / "db")
    saved = store.save(Token(user_name="ana", refresh_token="1000.r", client_id=CLIENT_ID, client_secret=CLIENT_SECRET))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            outcomes = []
            for op in (lambda: store.get("1"), lambda: store.save(Token(user_name="bob", refresh_token="x")), store.all, store.clear, store.close):
                try:
                    op()
                    outcomes.append("ran")
                except tokenstore.ForkedError as e:
                    outcomes.append("forked" if "postgres://" in str(e) and "fork" in str(e) else "bad message")
            os.write(write, ",".join(outcomes).encode())
            del store  # dropping the child's copy must not touch the parent's files
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    status = wait_or_kill(pid, timeout=30)
    reported = os.read(read, 1000).decode()
    os.close(read)
    assert os.WEXITSTATUS(status) == 0
    assert reported == ",".join(["forked"] * 5)
    # The parent's store works and holds exactly what it held.
    assert store.all() == [saved]
    store.save(Token(user_name="carl", refresh_token="1000.c"))
    store.close()
    with tokenstore.open(tmp_path / "db") as again:
        assert sorted(t.user_name for t in again.all()) == ["ana", "carl"]


def wait_or_kill(pid: int, timeout: float) -> int:
    """The child's wait status; a child still running after ``timeout``
    (a hang: what using sled's state across a fork does) is killed and fails
    the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child hung for {timeout} s")


BLOCK_SDK = """
import sys
class BlockZoho:
    def find_spec(self, name, path=None, target=None):
        if name == "zohocrmsdk" or name.startswith("zohocrmsdk."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, BlockZoho())
"""


def test_without_the_sdk_the_plain_api_works_and_zoho_says_how_to_install(tmp_path):
    child = run_python(
        BLOCK_SDK
        + f"""
import tokenstore
with tokenstore.open({str(tmp_path / 'db')!r}) as store:
    print("plain", store.save(tokenstore.Token(user_name="a", refresh_token="r")).id)
print("sdk loaded:", any(m.startswith("zohocrmsdk") for m in sys.modules))
try:
    import tokenstore.zoho
except ImportError as e:
    print("ImportError:", e)
"""
    )
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "plain 1"
    assert lines[1] == "sdk loaded: False"
    assert lines[2].startswith("ImportError:") and "pip install zohocrmsdk8-0" in lines[2]


def test_16_threads_refreshing_through_the_sdk(tmp_path):
    """16 threads share one zoho.Store while the real SDK refreshes 1-second
    tokens (every get_token refreshes and saves): no error, no lost or
    duplicated record, every stored token one the server issued."""
    from fake_zoho import FakeZoho
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

    from tokenstore.zoho import Store

    users = [f"user{i}@example.com" for i in range(4)]
    with FakeZoho(expires_in=1) as zoho, Store(tmp_path / "db") as store:
        zoho.add_client(CLIENT_ID, CLIENT_SECRET)
        for i, user in enumerate(users):
            zoho.add_refresh_token(CLIENT_ID, f"1000.refresh.{i}", user)
            seeded = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=f"1000.refresh.{i}", user_signature=UserSignature(user))
            store.save_token(seeded)
        Initializer.initialize(environment=zoho.environment(), token=OAuthToken(user_signature=UserSignature(users[0])), store=store)
        errors, calls = [], [0]

        def worker(_: int) -> None:
            for _ in range(10):
                for user in users:
                    try:
                        access = OAuthToken(user_signature=UserSignature(user)).get_token()
                        assert zoho.access_tokens[access][0] == user  # this user's, never another's
                        calls[0] += 1
                    except BaseException as e:  # noqa: BLE001 - reported below
                        errors.append(f"{e!r} cause {getattr(e, 'cause', None)!r}")

        _, raised = together(THREADS, worker)
        assert raised == []
        assert errors == []
        assert calls[0] == THREADS * 10 * len(users)
        tokens = store.tokens.all()
        assert sorted(t.user_name for t in tokens) == users
        for t in tokens:
            assert zoho.access_tokens[t.access_token][0] == t.user_name
            assert t.refresh_token == f"1000.refresh.{users.index(t.user_name)}"
