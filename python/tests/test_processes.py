"""Threads, processes, fork, and the package without the SDK."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
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


class Child:
    """A Python process running ``code`` whose stdout lines are read with a
    time-out (a hang fails the test instead of stopping it)."""

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def line(self, timeout: float = 30) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(f"the child process said nothing for {timeout} s")
        if not line:
            self.proc.wait(timeout=10)
            pytest.fail(f"the child process ended (status {self.proc.returncode}): {self.proc.stderr.read()}")
        return json.loads(line)

    def go_on(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the child process did not finish in {timeout} s")
        assert self.proc.returncode == 0, self.proc.stderr.read()


def test_a_second_process_uses_the_store_while_the_first_holds_it(tmp_path):
    db = str(tmp_path / "db")
    with tokenstore.open(db) as store:
        store.save(Token(user_name="ana", refresh_token="1000.r"))
        assert store.shared
        child = Child(
            f"""
            import json, os, sys, time, tokenstore
            t = time.monotonic()
            store = tokenstore.open({db!r})
            opened = time.monotonic() - t
            ana = store.find(user_name="ana")
            bob = store.save(tokenstore.Token(user_name="bob", refresh_token="1000.b"))
            print(json.dumps({{"opened_s": opened, "ana": ana and ana.refresh_token, "bob": bob.id,
                              "info": store.info(), "shared": store.shared}}), flush=True)
            sys.stdin.readline()  # the parent looks while this one holds it open
            carl = store.find(user_name="carl")
            print(json.dumps({{"carl": carl and carl.refresh_token, "all": sorted(t.user_name for t in store.all())}}), flush=True)
            store.close()
            """
        )
        seen = child.line()
        # The child sees the parent's save, the parent the child's.
        assert seen["ana"] == "1000.r"
        assert seen["opened_s"] < 5
        assert seen["shared"] is True
        assert seen["info"]["role"] == "client"
        assert seen["info"]["owner_pid"] == os.getpid()
        assert store.find(user_name="bob").id == seen["bob"] == "2"
        info = store.info()
        assert (info["role"], info["owner_pid"], info["shared"]) == ("owner", os.getpid(), True)
        assert info["clients"] >= 1
        store.save(Token(user_name="carl", refresh_token="1000.c"))
        child.go_on()
        assert child.line() == {"carl": "1000.c", "all": ["ana", "bob", "carl"]}
        child.finish()
        # The first process is unaffected.
        assert store.find(user_name="ana").refresh_token == "1000.r"
    # Once closed, another process opens it alone: it owns it.
    child = run_python(f"import tokenstore; s = tokenstore.open({db!r}); print(s.info()['role'], len(s.all()))")
    assert child.stdout.split() == ["owner", "3"], child.stderr


def test_exclusive_keeps_the_store_to_one_process(tmp_path):
    db = str(tmp_path / "db")
    attempt = f"""
        import json, time, tokenstore
        out = {{}}
        for how, kwargs in (("exclusive", {{"exclusive": True}}), ("shared", {{"owner_timeout": 1}})):
            t = time.monotonic()
            try:
                tokenstore.open({db!r}, **kwargs).close()
                out[how] = ["opened", 0]
            except tokenstore.Error as e:
                out[how] = [type(e).__name__, round(time.monotonic() - t, 3), str(e)]
        print(json.dumps(out))
        """
    # Held exclusively: every other open is refused, quickly.
    with tokenstore.open(db, exclusive=True) as store:
        store.save(Token(user_name="ana", refresh_token="1000.r"))
        assert not store.shared
        info = store.info()
        assert (info["shared"], info["role"], info["owner_pid"], info["clients"]) == (False, None, None, None)
        child = run_python(attempt, timeout=60)
        assert child.returncode == 0, child.stderr
        out = json.loads(child.stdout)
        assert out["exclusive"][0] == "LockedError", out
        assert out["exclusive"][1] < 5, out
        # A shared open finds the lock held and no owner serving: refused
        # once its owner_timeout (1 s here) has passed.
        assert out["shared"][0] == "LockedError", out
        assert out["shared"][1] < 4, out
        assert store.find(user_name="ana").refresh_token == "1000.r"
    # Shared by its owner: an exclusive open is refused, a shared one joins.
    with tokenstore.open(db) as store:
        child = run_python(attempt, timeout=60)
        assert child.returncode == 0, child.stderr
        out = json.loads(child.stdout)
        assert out["exclusive"][0] == "LockedError", out
        assert out["exclusive"][1] < 5, out
        assert out["shared"] == ["opened", 0], out
        assert store.find(user_name="ana").refresh_token == "1000.r"


def test_the_zoho_store_in_a_second_process(tmp_path):
    db = str(tmp_path / "db")
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

    from tokenstore.zoho import Store

    with Store(db) as store:
        store.save_token(OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token="1000.r.ana",
                                    user_signature=UserSignature("ana@example.com")))
        child = run_python(
            f"""
            from tokenstore.zoho import Store
            from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
            from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature
            store = Store({db!r})
            found = store.find_token(OAuthToken(user_signature=UserSignature("ana@example.com")))
            bob = OAuthToken(client_id="c", client_secret="s", refresh_token="1000.r.bob", user_signature=UserSignature("bob@example.com"))
            store.save_token(bob)
            print(found.get_refresh_token(), bob.get_id(), store.tokens.info()["role"])
            """
        )
        assert child.stdout.split() == ["1000.r.ana", "2", "client"], child.stderr
        assert store.find_token_by_id("2").get_refresh_token() == "1000.r.bob"


@pytest.mark.parametrize("how", ["close", "sigkill"])
def test_when_the_owner_goes_another_process_takes_over(tmp_path, how):
    """The owner (another process) saves, then closes or is SIGKILLed; this
    process, its client, carries on and becomes the owner; nothing
    acknowledged is lost."""
    db = str(tmp_path / "db")
    owner = Child(
        f"""
        import json, os, sys, tokenstore
        store = tokenstore.open({db!r})
        for i in range(50):
            store.save(tokenstore.Token(user_name=f"u{{i}}", refresh_token=f"1000.r.{{i}}"))
        print(json.dumps(store.info()), flush=True)
        sys.stdin.readline()
        store.close()
        print(json.dumps({{"closed": True}}), flush=True)
        sys.stdin.readline()
        """
    )
    try:
        info = owner.line()
        assert (info["role"], info["owner_pid"]) == ("owner", owner.proc.pid)
        with tokenstore.open(db) as store:
            assert store.info()["role"] == "client"
            assert len(store.all()) == 50
            if how == "close":
                owner.go_on()
                assert owner.line() == {"closed": True}
            else:
                owner.proc.kill()
                owner.proc.wait(timeout=10)
            started = time.monotonic()
            assert store.find(user_name="u49").refresh_token == "1000.r.49"
            paused = time.monotonic() - started
            store.save(Token(user_name="after", refresh_token="1000.after"))
            info = store.info()
            assert (info["role"], info["owner_pid"]) == ("owner", os.getpid())
            assert paused < 10
            assert len(store.all()) == 51
    finally:
        if owner.proc.poll() is None:
            owner.proc.kill()
        owner.proc.wait(timeout=10)
    with tokenstore.open(db) as again:
        assert len(again.all()) == 51


OWNER_ELSEWHERE = """
    import json, sys, tokenstore
    store = tokenstore.open({db!r})
    print(json.dumps(store.info()), flush=True)
    sys.stdin.readline()
    """


def test_a_stopped_owner_gives_a_bounded_clear_error_and_then_answers_again(tmp_path):
    db = str(tmp_path / "db")
    owner = Child(OWNER_ELSEWHERE.format(db=db))
    try:
        owner.line()
        store = tokenstore.open(db, owner_timeout=1)
        store.save(Token(user_name="ana", refresh_token="1000.r"))
        os.kill(owner.proc.pid, signal.SIGSTOP)
        wait_until_stopped(owner.proc.pid)
        try:
            outcomes = []
            for op in (lambda: store.save(Token(user_name="bob", refresh_token="1000.b")),
                       lambda: store.find(user_name="ana"), store.all):
                started = time.monotonic()
                with pytest.raises(tokenstore.Error) as raised:
                    op()
                outcomes.append((type(raised.value).__name__, time.monotonic() - started < 3, str(raised.value)))
        finally:
            os.kill(owner.proc.pid, signal.SIGCONT)
        assert store.find(user_name="ana").refresh_token == "1000.r"
        store.close()
        for kind, bounded, message in outcomes:
            assert bounded, message
            assert kind == "StorageError", message
            assert f"pid {owner.proc.pid}" in message, message
    finally:
        owner.proc.kill()
        owner.proc.wait(timeout=10)


FORK = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(work) -> object:
    """Runs ``work()`` in a child made by ``os.fork()`` and returns what it
    returned (JSON), or fails with what it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            try:
                answer = {"ok": work()}
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                answer = {"raised": f"{type(e).__name__}: {e}"}
            os.write(write, json.dumps(answer).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    status = wait_or_kill(pid, timeout=60)
    with os.fdopen(read) as f:
        reported = f.read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, reported
    answer = json.loads(reported)
    assert "raised" not in answer, answer["raised"]
    return answer["ok"]




@FORK
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
@pytest.mark.parametrize("parent", ["owner", "client"])
def test_a_store_opened_before_fork_works_in_the_child(tmp_path, parent):
    """The forking process owns the store, or is itself a client of an owner
    in another process."""
    db = str(tmp_path / "db")
    owner = Child(OWNER_ELSEWHERE.format(db=db)) if parent == "client" else None
    try:
        owner_pid = owner.line()["owner_pid"] if owner else os.getpid()
        store = tokenstore.open(db)
        assert store.info()["role"] == parent
        saved = store.save(Token(user_name="ana", refresh_token="1000.r", client_id=CLIENT_ID, client_secret=CLIENT_SECRET))

        def child() -> dict:
            found = store.find(user_name="ana")
            bob = store.save(Token(user_name="bob", refresh_token="1000.b"))
            info = store.info()
            return {"ana": found and found.refresh_token, "bob": bob.id, "role": info["role"], "owner_pid": info["owner_pid"],
                    "users": sorted(t.user_name for t in store.all())}

        got = in_child(child)
        assert got == {"ana": "1000.r", "bob": "2", "role": "client", "owner_pid": owner_pid, "users": ["ana", "bob"]}
        # The parent sees the child's save, and its own store is intact.
        assert store.find(user_name="bob").refresh_token == "1000.b"
        assert store.info()["role"] == parent
        # A child that closes its inherited copy, and one that drops it
        # without closing, leave the parent's store alone.
        assert in_child(lambda: store.close() or store.closed) is True

        def drop() -> str:
            nonlocal store
            kept = store
            store = None
            del kept
            return "dropped"

        assert in_child(drop) == "dropped"
        assert not store.closed
        assert store.get(saved.id) == saved
        store.save(Token(user_name="carl", refresh_token="1000.c"))
        store.close()
    finally:
        if owner is not None:
            owner.go_on()
            owner.finish()
    with tokenstore.open(db) as again:
        assert sorted(t.user_name for t in again.all()) == ["ana", "bob", "carl"]


@FORK
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_access_tokens_after_fork_use_the_childs_own_connections(tmp_path):
    """The parent's OAuth client keeps HTTP connections alive; a child
    refreshing through the inherited store makes its own, and the parent's
    keep working."""
    from fake_zoho import FakeZoho

    with FakeZoho() as zoho, tokenstore.open(tmp_path / "db") as store:
        zoho.add_client(CLIENT_ID, CLIENT_SECRET)
        zoho.add_refresh_token(CLIENT_ID, "1000.r", "ana")
        store.save(Token(user_name="ana", refresh_token="1000.r", client_id=CLIENT_ID, client_secret=CLIENT_SECRET))
        first = store.access_token(user_name="ana", accounts_url=zoho.base)
        got = in_child(lambda: store.access_token(user_name="ana", accounts_url=zoho.base, refresh=True).token)
        assert got != first.token and zoho.access_tokens[got][0] == "ana"
        assert store.find(user_name="ana").access_token == got
        again = store.access_token(user_name="ana", accounts_url=zoho.base, refresh=True)
        assert again.token not in (first.token, got)
        assert len(zoho.refreshes()) == 3


@FORK
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_an_exclusive_store_used_after_fork_raises_and_the_parent_is_intact(tmp_path):
    store = tokenstore.open(tmp_path / "db", exclusive=True)
    saved = store.save(Token(user_name="ana", refresh_token="1000.r", client_id=CLIENT_ID, client_secret=CLIENT_SECRET))

    def child() -> list:
        outcomes = []
        for op in (lambda: store.get("1"), lambda: store.save(Token(user_name="bob", refresh_token="x")), store.all,
                   store.clear, store.info, store.close):
            try:
                op()
                outcomes.append("ran")
            except tokenstore.ForkedError as e:
                outcomes.append("forked" if "exclusive=True" in str(e) and "fork" in str(e) else f"bad message: {e}")
        return outcomes

    assert in_child(child) == ["forked"] * 6
    # The parent's store works and holds exactly what it held.
    assert store.all() == [saved]
    store.save(Token(user_name="carl", refresh_token="1000.c"))
    store.close()
    with tokenstore.open(tmp_path / "db") as again:
        assert sorted(t.user_name for t in again.all()) == ["ana", "carl"]


#: The store the pool's workers inherit (set before the pool forks them).
_INHERITED: "tokenstore.Store | None" = None


def _save_in_worker(i: int):
    saved = _INHERITED.save(Token(user_name=f"worker-user-{i}", refresh_token=f"1000.w.{i}"))
    again = _INHERITED.find(user_name=f"worker-user-{i}")
    return os.getpid(), saved.id, again.id, _INHERITED.info()["role"]


@FORK
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_multiprocessing_pool_saves_through_an_inherited_store(tmp_path):
    global _INHERITED
    ctx = multiprocessing.get_context("fork")
    with tokenstore.open(tmp_path / "db") as store:
        store.save(Token(user_name="parent", refresh_token="1000.p"))
        _INHERITED = store
        try:
            pool = ctx.Pool(4)
            try:
                results = pool.map_async(_save_in_worker, range(40), chunksize=1).get(timeout=120)
            finally:
                pool.close()
                pool.join()
        finally:
            _INHERITED = None
        assert len(results) == 40
        assert all(pid != os.getpid() for pid, *_ in results)
        assert {role for *_, role in results} == {"client"}
        assert all(saved == found for _, saved, found, _ in results)
        stored = {t.user_name: t.id for t in store.all()}
        assert len(stored) == 41
        assert len(set(stored.values())) == 41
        for i, (_, saved, _, _) in enumerate(results):
            assert stored[f"worker-user-{i}"] == saved
        assert store.info()["role"] == "owner"


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


def wait_until_stopped(pid: int, timeout: float = 10) -> None:
    """Waits until every thread of `pid` is stopped: kill() returns before a
    thread running on another CPU has stopped, and a request sent at once
    could still be answered."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if all(state in ("T", "t") for state in states):
            return
        assert time.monotonic() < deadline, f"process {pid} did not stop: {states}"
        time.sleep(0.005)

