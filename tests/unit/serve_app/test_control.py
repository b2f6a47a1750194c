import os

from serve_app import control
from serve_app.constants import NODE_ENV


def test_node_environment_sets_what_the_proxy_reads_and_keeps_what_the_user_chose(monkeypatch):
    for key in NODE_ENV:
        monkeypatch.delenv(key, raising=False)
    assert control.node_environment() == NODE_ENV
    assert all(os.environ[key] == value for key, value in NODE_ENV.items())

    key = next(iter(NODE_ENV))
    monkeypatch.setenv(key, "0")  # the user turned it off: it stays off
    assert control.node_environment()[key] == "0"
    assert os.environ[key] == "0"
