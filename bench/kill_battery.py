"""Kill battery (issue 12): parts of the app killed one after another under load, N times over.

The app as `serve run serve_app:app` starts it (the video pipeline, mini tier, two ingress
replicas) on a local Ray with logical CPUs = physical cores. 4 closed-loop clients; every
`--every` seconds one part is killed, in this order: the detector stage replica, an ingress
replica, the energy node actor, the arrivals actor. Each battery prints the requests, the
failures (and how many of them were in flight when an ingress replica was killed: the only
ones that may fail), each kill's recovery (kill → first answer to a request sent after it),
and whether the app answers at the end. Exit 1 if any battery failed a request it should
not have, or the app did not answer at the end.

    .venv/bin/python bench/kill_battery.py --runs 3          # make kill-battery; ~8 min here
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from energy.supply import physical_cores  # noqa: E402
from ipa_energy import RAY_NAMESPACE  # noqa: E402
from loadgen.driver import closed_loop  # noqa: E402
from serve_app import control  # noqa: E402
from serve_app.config import from_args  # noqa: E402
from workloads import payloads  # noqa: E402

#: a request sent up to this long after `ray.kill` returned may still reach the killed replica (s)
KILL_TAKES_S = 1.0


def _actor(match) -> tuple[str, object]:
    for a in ray.util.list_named_actors(all_namespaces=True):
        if match(a["name"]):
            return a["name"], ray.get_actor(a["name"], namespace=a["namespace"])
    raise LookupError("no such actor")


# (what, how to find it, whether Ray may restart that same actor)
PARTS = [
    ("detector replica", lambda: _actor(lambda n: "#video.detector" in n), False),
    ("ingress replica", lambda: _actor(lambda n: "#Ingress#" in n), False),
    ("energy node actor", lambda: _actor(lambda n: n.startswith("energy-node-")), False),
    ("arrivals actor", lambda: _actor(lambda n: n.startswith("arrivals-")), True),
]


def battery(url: str, every_s: float) -> dict:
    kills: list[tuple[str, float]] = []

    def killer():
        for what, find, restart in PARTS:
            time.sleep(every_s)
            try:
                _, actor = find()
            except LookupError:
                kills.append((what + " (not found)", time.time()))
                continue
            kills.append((what, time.time()))
            ray.kill(actor, no_restart=not restart)

    thread = threading.Thread(target=killer)
    thread.start()
    body = payloads.image_request(seed=1)
    records = asyncio.run(closed_loop(f"{url}/v1/pipelines/video", lambda i: body, clients=4,
                                      duration_s=every_s * (len(PARTS) + 1)))
    thread.join()
    failed = [r for r in records if r.status != 200 and not r.shed]
    ingress_at = next((t for what, t in kills if what == "ingress replica"), None)
    excused = [r for r in failed if ingress_at is not None
               and r.sent_s <= ingress_at + KILL_TAKES_S and r.finished_s >= ingress_at]
    recovery = {}
    for what, t in kills:
        after = [r.finished_s for r in records if r.status == 200 and r.sent_s > t + KILL_TAKES_S]
        recovery[what] = round(min(after) - t, 1) if after else None
    answers = httpx.post(f"{url}/v1/pipelines/video", json=body, timeout=120).status_code == 200
    return {"requests": len(records), "failed": len(failed), "failed_in_flight_on_ingress": len(excused),
            "shed": sum(r.shed for r in records), "recovery_s": recovery, "answers_at_end": answers,
            "statuses": sorted({(r.status, r.error[:50]) for r in failed})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between kills")
    args = parser.parse_args()
    control.node_environment()
    ray.init(num_cpus=physical_cores(), include_dashboard=False, log_to_driver=False, namespace=RAY_NAMESPACE)
    port = 8000 + os.getpid() % 1000
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    spec, plans = from_args({"pipelines": "video"})
    control.deploy(spec, plans)
    url = f"http://127.0.0.1:{port}"
    ok = True
    try:
        print(f"| battery | requests | failed | of them in flight on the killed ingress | shed | recovery (s): "
              f"{', '.join(p[0] for p in PARTS)} | answers at the end |")
        print("|---|---|---|---|---|---|---|")
        for run in range(1, args.runs + 1):
            r = battery(url, args.every)
            good = r["failed"] == r["failed_in_flight_on_ingress"] and r["answers_at_end"]
            ok &= good
            print(f"| {run} | {r['requests']} | {r['failed']} | {r['failed_in_flight_on_ingress']} | {r['shed']} | "
                  f"{', '.join(str(v) for v in r['recovery_s'].values())} | {'yes' if r['answers_at_end'] else 'NO'} |"
                  + ("" if good else f" ← {r['statuses']}"), flush=True)
            time.sleep(15)  # the replaced replicas settle before the next battery
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
