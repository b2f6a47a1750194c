"""The locustfile, headless, in its own process, against a tiny local HTTP server."""

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from loadgen import traces
from loadgen.replay import per_second
from tests.unit.loadgen.answers import answer, description

ROOT = Path(__file__).resolve().parents[3]


class _Pipeline(BaseHTTPRequestHandler):
    """Answers like the ingress: a schema on GET, a pipeline answer (or a 503 every 5th) on POST."""

    posts = 0
    lock = threading.Lock()

    def log_message(self, *_):
        pass

    def _send(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, description({"prompt": {}, "max_new_tokens": {}}))

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        assert "prompt" in body
        with self.lock:
            type(self).posts += 1
            fail = type(self).posts % 5 == 0
        time.sleep(0.02)
        if fail:
            return self._send(503, b'{"error": "stage failed"}')
        self._send(200, answer({"generator": "g"}, plan_version=1, energy={"j": 0.2, "method": "tdp-estimate"}))


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Pipeline)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_headless_replay_follows_the_trace_and_records_every_request(server, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("rps\n4\n9\n2.5\n6\n")
    record = tmp_path / "requests.jsonl"
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadgen/locustfile.py"), "--host", server, "--headless",
           "--only-summary", "--pipeline", "llm", "--trace", str(trace), "--rate-factor", "2", "--record", str(record),
           "--senders", "20", "--drain", "10"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Shape test completed" in done.stderr, done.stderr[-2000:]
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    want = traces.counts(np.array([4, 9, 2.5, 6]) * 2)
    assert len(rows) == want.sum() == 43
    start = json.loads(record.with_suffix(".start.json").read_text())
    assert start["scheduled"] == 43 and start["trace"]["kind"] == "csv"
    got = per_second(np.array(sorted(r["scheduled_s"] for r in rows)) - start["load_start_s"], 4)
    assert got.tolist() == want.tolist()
    assert max(r["sent_s"] - r["scheduled_s"] for r in rows) < 0.5  # open loop: sent when due
    statuses = [r["status"] for r in rows]
    assert statuses.count(503) == 43 // 5 and statuses.count(200) == 43 - 43 // 5
    ok = next(r for r in rows if r["status"] == 200)
    assert ok["variants"] == {"generator": "g"} and ok["energy_method"] == "tdp-estimate"
