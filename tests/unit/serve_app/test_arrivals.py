"""Arrival counts summed over ingress replicas (serve_app.arrivals), without Ray."""

from serve_app.arrivals import ArrivalBook, ArrivalCounter, Pusher

T = 1_000_000  # a whole Unix second


def push(book: ArrivalBook, pusher: Pusher, now: float) -> None:
    replica, counts, through, timings = pusher.payload(now)
    pusher.acknowledge(book.update(replica, counts, through, now, timings))


def test_two_replicas_are_summed_and_repeated_pushes_do_not_double_count():
    book = ArrivalBook()
    a, b = ArrivalCounter(["p"]), ArrivalCounter(["p"])
    pa, pb = Pusher(a, "a"), Pusher(b, "b")
    for s in range(10):
        for _ in range(3):
            a.count("p", T + s + 0.1)
        b.count("p", T + s + 0.5)
        push(book, pa, T + s + 0.9)
        push(book, pb, T + s + 0.95)
    push(book, pa, T + 10.2)
    push(book, pb, T + 10.3)
    assert book.history("p", T + 10.4, 10) == [4] * 10
    book.update(*Pusher(a, "a").payload(T + 10.5)[:3], T + 10.5)  # a retried (full) push: still 4 a second
    assert book.history("p", T + 10.6, 10) == [4] * 10
    assert a.history("p", T + 10.4, 10) == [3] * 10  # what one replica alone would report
    assert book.history("other", T + 10.4, 3) == [0, 0, 0]
    assert book.by_replica("p") == {"a": 30, "b": 10}


def test_history_ends_where_every_live_replica_has_pushed():
    book = ArrivalBook(stale_s=5)
    a, b = ArrivalCounter(["p"]), ArrivalCounter(["p"])
    pa, pb = Pusher(a, "a"), Pusher(b, "b")
    a.count("p", T + 0.5)
    b.count("p", T + 0.5)
    push(book, pa, T + 1.1)  # a has pushed second T, b not yet
    push(book, pb, T + 0.9)  # b's last push was during second T (complete through T-1)
    assert book.history("p", T + 1.2, 2) == [0, 0]  # T is left out rather than undercounted
    push(book, pb, T + 1.3)
    assert book.history("p", T + 1.4, 2) == [0, 2]
    # b stops pushing (its replica died): after stale_s it no longer holds the history back;
    # a's pushes were delayed for seconds (a busy event loop): nothing is lost
    a.count("p", T + 1.5)
    push(book, pa, T + 8.1)
    assert book.history("p", T + 8.2, 8) == [2, 1, 0, 0, 0, 0, 0, 0]


def test_a_restarted_book_gets_each_replicas_whole_window_again():
    a = ArrivalCounter(["p"])
    pa = Pusher(a, "a")
    book = ArrivalBook()
    for s in range(20):
        a.count("p", T + s + 0.5)
        push(book, pa, T + s + 0.9)
    assert pa.payload(T + 20.5)[1]["p"].keys() == {T + 19}  # only what the book lacks
    book = ArrivalBook()  # the actor restarted: its state is gone, its incarnation is new
    push(book, pa, T + 20.5)  # this push carried only the newest second...
    assert sum(book.history("p", T + 20.6, 30)) == 1
    push(book, pa, T + 21.5)  # ...so the next one resends everything
    assert sum(book.history("p", T + 21.6, 30)) == 20
    pa.acknowledge(None)  # a failed push: resend everything next time too
    assert len(pa.payload(T + 22.5)[1]["p"]) == 20


def test_old_seconds_and_long_gone_replicas_are_pruned():
    book = ArrivalBook(keep_s=60)
    c = ArrivalCounter(["p"], keep_s=60)
    c.count("p", T)
    book.update("gone", {"p": {T: 5}}, T, T + 1)
    book.update("a", c.complete(T + 1, 0), T, T + 1)
    book.update("a", {}, T + 100, T + 101)
    assert "gone" not in book.counts and book.counts["a"]["p"] == {}
    for s in range(200):
        c.count("p", T + s)
    assert len(c.counts["p"]) <= 62


def test_stage_timings_are_summed_over_replicas_once_each():
    from serve_app.timings import StageTimings

    book = ArrivalBook()
    ta, tb = StageTimings(600), StageTimings(600)
    pa, pb = Pusher(ArrivalCounter(["p"]), "a", ta), Pusher(ArrivalCounter(["p"]), "b", tb)
    for s in range(10):
        ta.record("p", "cls", "small", T + s + 0.1, compute_ms=200, batch_size=2, latency_ms=150)  # 0.1 s each
        tb.record("p", "cls", "small", T + s + 0.2, compute_ms=300, batch_size=1, latency_ms=350)
        tb.record("q", "cls", "small", T + s + 0.2, compute_ms=1, batch_size=1, latency_ms=1)  # another pipeline
        push(book, pa, T + s + 0.9)
        push(book, pb, T + s + 0.95)
    push(book, pa, T + 10.2)
    push(book, pa, T + 10.3)  # repeated: set, not added
    push(book, pb, T + 10.3)
    (row,) = book.stages("p", T + 10.4, 10)
    assert (row.stage, row.variant, row.seconds, row.requests) == ("cls", "small", 10, 20)
    assert abs(row.s_per_request - 0.2) < 1e-9  # (10 × 0.1 + 10 × 0.3) / 20
    assert abs(row.mean_batch - 20 / 15) < 1e-9  # 5 batches of 2 + 10 of 1
    assert 150 < row.p99_ms <= 350
    assert book.stages("p", T + 10.4, 10)[0].requests == 20


def test_the_actor_answers_what_the_ingress_pushes_and_the_planner_asks():
    """The actor class's own methods (without Ray): the calls serve_app.ingress and planner.actor make."""
    import time

    from ipa_energy.records import StageObservation
    from serve_app.arrivals import ArrivalsActor
    from serve_app.timings import StageTimings

    actor = ArrivalsActor.__ray_actor_class__()
    counter, timings = ArrivalCounter(["p"]), StageTimings(600)
    now = time.time()
    for s in range(1, 6):
        counter.count("p", now - s)
        timings.record("p", "cls", "v", now - s, compute_ms=50, batch_size=1, latency_ms=60)
    assert isinstance(actor.update(*Pusher(counter, "a", timings).payload(now)), str)
    assert sum(actor.history("p", 10)) == 5
    (row,) = [StageObservation.model_validate(o) for o in actor.stages("p", 10)]
    assert row.requests == 5 and abs(row.s_per_request - 0.05) < 1e-9
    # the replicas' own cold starts, per pipeline, for the planner's horizon
    actor.report_replica("p.cls.0", "r1", {"variant": "v", "cold_start_s": 14.5})
    actor.report_replica("p.cls.0", "r2", {"variant": "v", "cold_start_s": None})  # still starting
    actor.report_replica("q.cls.0", "r3", {"variant": "v", "cold_start_s": 3.0})
    assert actor.cold_starts("p.") == {"r1": 14.5}


def test_energy_totals_are_summed_over_ingress_replicas_and_a_report_replaces_the_last():
    from serve_app.arrivals import ArrivalsActor

    actor = ArrivalsActor.__ray_actor_class__()
    actor.report_energy("a", {"p": {"requests": 3, "energy_j": 1.5, "methods": ["tdp-estimate"]}})
    actor.report_energy("b", {"p": {"requests": 2, "energy_j": 1.0, "methods": ["rapl-sysfs"]},
                              "q": {"requests": 1, "energy_j": 0.2, "methods": ["tdp-estimate"]}})
    actor.report_energy("a", {"p": {"requests": 4, "energy_j": 2.0, "methods": ["tdp-estimate"]}})  # running totals
    assert actor.energy_totals() == {
        "p": {"requests": 6, "energy_j": 3.0, "methods": ["rapl-sysfs", "tdp-estimate"]},
        "q": {"requests": 1, "energy_j": 0.2, "methods": ["tdp-estimate"]},
    }
