"""model/pool.py: the instances a pool lends out; with the HTTP backend every slot shares one client.

Two real HTTP endpoints on 127.0.0.1 (benchmarks/scripted_endpoint.py) show why: conversations started
at once from two slots must go to two endpoints, which separate clients (each seeing only its own
requests in flight) would not do.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from scripted_endpoint import ScriptedEndpoint

from mcp_loco.config import Settings
from mcp_loco.interfaces import GenerateOptions
from mcp_loco.model.backends.replay import ReplayModel
from mcp_loco.model.pool import Instances
from mcp_loco.model.protocol import Message, render


def test_http_slots_share_one_client_and_spread_conversations_over_endpoints() -> None:
    with ScriptedEndpoint(0.3) as a, ScriptedEndpoint(0.3) as b:
        settings = Settings()
        settings.model.backend = "http"
        settings.http.endpoints = [a.url, b.url]
        instances = Instances(settings)
        slots = [instances.load() for _ in range(4)]
        assert all(s is slots[0] for s in slots)
        used: list[str | None] = []

        def converse(i: int) -> None:
            slots[i].complete(render([Message("user", f"question {i}")]), GenerateOptions(max_tokens=8))
            used.append(slots[i].last_endpoint())  # type: ignore[attr-defined]

        threads = [threading.Thread(target=converse, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        instances.close_all()
        assert (a.requests, b.requests) == (2, 2)
        assert sorted(used) == sorted([a.url, a.url, b.url, b.url])


def test_in_process_slots_are_separate_and_each_is_closed_once() -> None:
    closed: list[int] = []

    class Counted(ReplayModel):
        def close(self) -> None:
            closed.append(id(self))
            super().close()

    instances = Instances(Settings(), factory=lambda: Counted(["x"]))
    models = [instances.load() for _ in range(3)]
    assert len({id(m) for m in models}) == 3
    instances.close_all()
    instances.close_all()  # nothing left the second time
    assert sorted(closed) == sorted(id(m) for m in models)
