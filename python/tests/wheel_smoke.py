"""The installed wheel works on this platform: imports, opens an embedded
store, saves and reads a token back. Run by the release workflow on each
platform it can run there (``python python/tests/wheel_smoke.py``); not a
pytest module: the suite proper runs on Linux (tests/python/run.sh)."""

import os
import tempfile

import tokenstore

# The installed package (a script's path starts at its own directory, so
# python/tokenstore is not importable from here).
assert "site-packages" in tokenstore.__file__, tokenstore.__file__
with tempfile.TemporaryDirectory() as directory:
    with tokenstore.open(os.path.join(directory, "tokens")) as store:
        saved = store.save(tokenstore.Token(user_name="ana@example.com", client_id="1000.C",
                                            client_secret="s", refresh_token="1000.r"))
        assert store.find(user_name="ana@example.com") == saved
print(f"tokenstore {tokenstore.__version__} works: {tokenstore.__file__}")
