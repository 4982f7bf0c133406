"""Record the polls of each findings scenario, in the monitor's JSON Lines format.

Run it from the repository root to refresh them: ``.venv/bin/python -m
tests.monitor.data.findings.record [KIND ...]`` (every kind by default; about a minute
in all, most of it waiting for cppTango's 10 s heartbeat period).  Each file is
``KIND.jsonl``, one poll per line as `tango-event-monitor -o FILE` writes it, taken with
the real collector while the scenarios of `tests.monitor.findings.scenarios` run: first
healthy polls, then the polls of the cause, then healthy polls again, so that a rule's
tests can check that the finding is absent, then held, then cleared.  ``fast``, the
healthy twin of ``slow``, and ``pusher`` are polled alongside the servers at fault.

- ``slow-callback``: sampling on; `steady` x3, `slow_consumer` x5 (``slow`` handles 3
  events per poll while 12 are pushed), `steady` x3.
- ``falling-behind``: sampling off; `steady` x2, `slow_consumer` x6, `steady` x2.
- ``missed-events``: sampling off; `steady` x2, `slow_consumer` x4, `overflow` (two polls
  per round, the last one showing the missed events; one round here), `steady` x2.
- ``subscription-churn``: sampling on; `steady` x3 with the churner subscribed,
  `churning` x4, `steady` x3.
- ``not-connected``: the waiter and ``fast``, a poll every second: 13 polls while the
  waiter's source is not running, then its server starts, and polls go on until the
  waiter is connected, and 2 more.
- ``server-not-answering``: a server frozen (SIGSTOP) and ``pusher``, with a 3 s timeout:
  `idle` x2, `frozen_server` x3, `answered` (one poll unless the server's last call was
  still under way), `idle` x1.
- ``server-restarted``: ``restarted``: `publishing` x2, `restart` (one poll),
  `publishing` x2, `restart` with polls while it is stopped, or not connected again
  (cppTango waits 1 s before it connects again), a second apart, `publishing` x2.
- ``samples-shared``: sampling on; `steady` x3, `shared_samples` x3, `steady` x3.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from milonga.monitor import JsonLinesWriter, Poll
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers
from tests.monitor.findings.scenarios import (
    FAST,
    FROZEN_TIMEOUT,
    ICE_NUMBER,
    PUSHER,
    WAITING_PERIOD,
    Churn,
    Restarting,
    Streams,
    Waiting,
    Watch,
    answered,
    churning,
    connecting,
    frozen_server,
    idle,
    overflow,
    publishing,
    restart,
    running,
    shared_samples,
    slow_consumer,
    steady,
    take,
)
from tests.monitor.frozen import start_ice

HERE = Path(__file__).parent


def slow_callback(sandbox: TangoSandbox) -> list[Poll]:
    with (
        running(Streams(sandbox)) as streams,
        Watch(sandbox, streams.devices) as watch,
        watch.sampling(),
    ):
        return [
            *take(steady(streams, watch), 3),
            *take(slow_consumer(streams, watch), 5),
            *take(steady(streams, watch), 3),
        ]


def falling_behind(sandbox: TangoSandbox) -> list[Poll]:
    with running(Streams(sandbox)) as streams, Watch(sandbox, streams.devices) as watch:
        return [
            *take(steady(streams, watch), 2),
            *take(slow_consumer(streams, watch), 6),
            *take(steady(streams, watch), 2),
        ]


def missed_events(sandbox: TangoSandbox) -> list[Poll]:
    with running(Streams(sandbox)) as streams, Watch(sandbox, streams.devices) as watch:
        return [
            *take(steady(streams, watch), 2),
            *take(slow_consumer(streams, watch), 4),
            *overflow(streams, watch),
            *take(steady(streams, watch), 2),
        ]


def subscription_churn(sandbox: TangoSandbox) -> list[Poll]:
    with (
        running(Streams(sandbox)) as streams,
        running(Churn(sandbox)) as churn,
        Watch(sandbox, (PUSHER, FAST, *churn.devices)) as watch,
        watch.sampling(),
    ):
        return [
            *take(steady(streams, watch), 3),
            *take(churning(churn, streams, watch), 4),
            *take(steady(streams, watch), 3),
        ]


def not_connected(sandbox: TangoSandbox) -> list[Poll]:
    with (
        running(Streams(sandbox)),
        running(Waiting(sandbox)) as waiting,
        Watch(sandbox, (*waiting.devices, FAST)) as watch,
    ):
        polls = take(idle(watch, WAITING_PERIOD), 13)
        connected = 0
        with closing(connecting(waiting, watch)) as steps:
            for poll in steps:
                polls.append(poll)
                connected += not _waiting_in(poll)
                if connected == 3:
                    break
        return polls


def server_not_answering(sandbox: TangoSandbox) -> list[Poll]:
    servers = SandboxServers(sandbox)
    try:
        with running(Streams(sandbox)):
            server, device = start_ice(servers, ICE_NUMBER)
            with Watch(sandbox, (device, PUSHER), FROZEN_TIMEOUT) as watch:
                return [
                    *take(idle(watch), 2),
                    *take(frozen_server(sandbox, server, watch), 3),
                    *answered(watch),
                    *take(idle(watch), 1),
                ]
    finally:
        servers.cleanup()


def server_restarted(sandbox: TangoSandbox) -> list[Poll]:
    with (
        running(Restarting(sandbox)) as restarting,
        Watch(sandbox, restarting.devices) as watch,
    ):
        return [
            *take(publishing(restarting, watch), 2),
            *restart(restarting, watch, silent=False),
            *take(publishing(restarting, watch), 2),
            *restart(restarting, watch, silent=True),
            *take(publishing(restarting, watch), 2),
        ]


def samples_shared(sandbox: TangoSandbox) -> list[Poll]:
    with (
        running(Streams(sandbox)) as streams,
        Watch(sandbox, streams.devices) as watch,
        watch.sampling(),
    ):
        return [
            *take(steady(streams, watch), 3),
            *take(shared_samples(streams, watch), 3),
            *take(steady(streams, watch), 3),
        ]


RECORDINGS: dict[str, Callable[[TangoSandbox], list[Poll]]] = {
    "slow-callback": slow_callback,
    "falling-behind": falling_behind,
    "missed-events": missed_events,
    "subscription-churn": subscription_churn,
    "not-connected": not_connected,
    "server-not-answering": server_not_answering,
    "server-restarted": server_restarted,
    "samples-shared": samples_shared,
}


def _waiting_in(poll: Poll) -> bool:
    """Whether a server of ``poll`` lists a subscription waiting to connect."""
    return any(
        reply.snapshot is not None
        and reply.snapshot.client is not None
        and bool(reply.snapshot.client.not_connected)
        for reply in poll.replies
    )


def main(kinds: list[str]) -> None:
    unknown = sorted(set(kinds) - set(RECORDINGS))
    if unknown:
        sys.exit(f"unknown kinds {', '.join(unknown)}; expected some of {', '.join(RECORDINGS)}")
    with TangoSandbox() as sandbox:
        for kind in kinds or RECORDINGS:
            polls = RECORDINGS[kind](sandbox)
            path = HERE / f"{kind}.jsonl"
            with JsonLinesWriter(path) as writer:
                for poll in polls:
                    writer.write(poll)
            print(f"{path}: {len(polls)} polls, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
