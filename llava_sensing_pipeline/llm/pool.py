"""The hosts of one server kind, their slots, health and outages.

Requests are spread over hosts by free slots. A host that refuses connections, drops one and then fails a health
check, or hangs (a request unanswered after ``probe_after_s`` whose health check gets no reply either) is taken out
of rotation and probed until it answers. While no host is up, requests wait for one to come back; the waits of one
run add up, and once they reach ``down_wait_s`` (``--ollama-down-wait``, "in all") every waiting and later request
raises :class:`~.protocol.ServerDown`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .protocol import ServerDown

DOWN_WAIT_S = 300.0  # how long requests wait, in all, for servers that went away to come back (--ollama-down-wait)
DOWN_PROBE_S = 1.0  # while no host is up, each is checked this often
_log = logging.getLogger(__name__)


def clock(wall: float) -> str:
    """``HH:MM:SS`` local time, as the outage messages show it."""
    return time.strftime("%H:%M:%S", time.localtime(wall))


class HostDown(Exception):
    """A request's host is gone: refused (``reached`` False), dropped with no health check answered, or hung
    (``hung``: it accepts connections, but neither the request nor a health check got a reply)."""

    def __init__(self, hung: bool = False, reached: bool = True):
        super().__init__("hung" if hung else "unreachable")
        self.hung = hung
        self.reached = reached


@dataclass
class Host:
    """One server of the pool: its slots, health and throughput."""

    url: str
    in_use: int = 0
    down_until: float = 0.0  # monotonic time of its next health check; 0 = healthy
    cooldown_s: float = 0.0
    probing: bool = False
    requests: int = 0
    failures: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    down_since: float = 0.0  # wall clock when it went down (0 = up)
    down_mono: float = 0.0
    hung: bool = False
    outages: int = 0
    downtime_s: float = 0.0


class HostPool:
    """Spreads requests over hosts by free slots.

    A host whose request cannot connect, is dropped with no health check answered, or hangs (no reply, and a health
    check with a short timeout gets none either) is taken out of rotation and probed (``GET url + probe_path``,
    with ``headers``): while another host is up, after a cool-down that doubles while it stays down (5 s up to
    60 s); while no host is up, every second. Each host going down, and coming back, is one ``notify`` message.
    While no host is up, requests wait for one to come back; the spells with no host up add up over the pool's life
    (one run), and once they reach ``down_wait_s`` waiting requests raise :class:`ServerDown` (and so does every
    later request while no host is up). ``label`` names the server in messages ("Ollama"), ``restart`` says how to
    start it again.
    """

    def __init__(self, urls: list[str], slots: int, check_timeout_s: float, down_wait_s: float = DOWN_WAIT_S,
                 notify: Callable[[str], None] | None = None, *, probe_path: str = "/api/tags",
                 headers: Callable[[], dict] | None = None, label: str = "Ollama",
                 restart: str = "`ollama serve`"):
        self.slots = max(1, slots)
        self.hosts = [Host(u) for u in urls]
        self._check_timeout_s = check_timeout_s
        self.probe_path = probe_path
        self._headers = headers or dict
        self.label = label
        self.restart = restart
        self.down_wait_s = down_wait_s
        self.notify = notify or _log.warning
        self._cond = threading.Condition()
        self.excluded: dict[str, str] = {}
        self.all_down_since: float | None = None  # monotonic; set while no host is up
        self.outages = 0  # hosts gone down
        self.blocked_s = 0.0  # closed spells with no host up
        self.stopped = False  # set by stop(): waits end at once

    def probe(self, host: Host) -> bool:
        """A health check with the short timeout: does the host answer ``probe_path``?"""
        try:
            with httpx.Client(timeout=self._check_timeout_s, headers=self._headers()) as client:
                client.get(f"{host.url}{self.probe_path}").raise_for_status()
            return True
        except (OSError, httpx.HTTPError):
            return False

    def _up(self) -> list[Host]:
        return [h for h in self.hosts if not h.down_until]

    def _mark_down_locked(self, host: Host, hung: bool = False) -> None:
        if host.down_until or host not in self.hosts:
            return
        now = time.monotonic()
        host.down_since, host.down_mono, host.hung = time.time(), now, hung
        host.outages += 1
        self.outages += 1
        what = f"{'not answering' if hung else 'unreachable'} since {clock(host.down_since)}"
        if hung:
            what += f" (it accepts connections, but a health check got no reply within {self._check_timeout_s:g} s)"
        others = [h for h in self._up() if h is not host]
        if others:
            host.cooldown_s = 5.0
            host.down_until = now + host.cooldown_s
            self.notify(f"{self.label} at {host.url} {what}; the other {len(others)} host(s) carry on, and it is checked "
                        f"again every 5 to 60 s")
            return
        self.all_down_since = now
        for h in self.hosts:  # nothing is up: check every host often, so a return is seen at once
            h.down_until = min(h.down_until or math.inf, now + DOWN_PROBE_S)
        host.down_until = now + DOWN_PROBE_S
        who = "it" if len(self.hosts) == 1 else "one"
        none_else = "" if len(self.hosts) == 1 else ", and no other host is up"
        self.notify(f"{self.label} at {host.url} {what}{none_else}; waiting for {who} to come back (up to "
                    f"{self._wait_left():g} s; Ctrl-C stops, re-running resumes)")

    def _mark_up_locked(self, host: Host) -> None:
        if not host.down_until:
            return
        now = time.monotonic()
        down = now - host.down_mono
        host.downtime_s += down
        if self.all_down_since is not None:
            self.blocked_s += now - self.all_down_since
            self.all_down_since = None
        self.notify(f"{self.label} at {host.url} is back after {down:.0f} s (down since {clock(host.down_since)})")
        host.down_until, host.cooldown_s, host.down_since, host.down_mono, host.hung = 0.0, 0.0, 0.0, 0.0, False

    def _probe_due_locked(self) -> None:
        """Health-checks the hosts whose check is due (one thread per host; the lock is released meanwhile)."""
        for host in list(self.hosts):
            if not (host.down_until and time.monotonic() >= host.down_until and not host.probing):
                continue
            host.probing = True
            self._cond.release()
            try:
                ok = self.probe(host)
            finally:
                self._cond.acquire()
            host.probing = False
            if ok:
                self._mark_up_locked(host)
            elif self._up():
                host.cooldown_s = min(60.0, max(5.0, host.cooldown_s * 2))
                host.down_until = time.monotonic() + host.cooldown_s
            else:
                host.down_until = time.monotonic() + DOWN_PROBE_S
            self._cond.notify_all()

    def stop(self) -> None:
        """Ends every wait for a host at once (the run was interrupted): waiting requests raise :class:`ServerDown`."""
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def _waited_locked(self) -> float:
        """Seconds with no host up so far in this pool's life, the current spell included."""
        return self.blocked_s + (time.monotonic() - self.all_down_since if self.all_down_since is not None else 0.0)

    def _wait_left(self) -> float:
        return max(0.0, round(self.down_wait_s - self._waited_locked(), 1))

    def _raise_if_stopped_locked(self) -> None:
        if self.stopped:
            raise ServerDown(f"interrupted (Ctrl-C) while waiting for {self.label} to come back; re-running resumes")

    def _raise_if_waited_out_locked(self) -> None:
        """While no host is up: raises :class:`ServerDown` once the waits add up to ``down_wait_s`` (or the pool was
        stopped)."""
        self._raise_if_stopped_locked()
        if self.all_down_since is None or self._waited_locked() < self.down_wait_s:
            return
        down = sorted(self.hosts, key=lambda h: h.down_since)
        since = clock(down[0].down_since) if down and down[0].down_since else "?"
        what = "not answering" if all(h.hung for h in down) else "unreachable"
        where = f"{self.label} at {down[0].url}" if len(down) == 1 else f"every {self.label} host (" + ", ".join(
            h.url for h in down) + ")"
        raise ServerDown(
            f"{where} {what} since {since}: still down after waiting {self.down_wait_s:g} s in all "
            f"(--ollama-down-wait). Start it again ({self.restart}) and re-run the same command: the replies it "
            f"gave are cached, so only the unanswered requests are sent again.")

    def acquire(self, wait_s: float) -> Host:
        """A host with a free slot (most free slots first). Waits up to ``wait_s`` while all are busy, and while
        none is up, until one comes back (at most what is left of the pool's down wait; then :class:`ServerDown`)."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                self._raise_if_stopped_locked()
                self._probe_due_locked()
                free = [h for h in self._up() if h.in_use < self.slots]
                if free:
                    host = max(free, key=lambda h: (self.slots - h.in_use, -h.requests))
                    host.in_use += 1
                    return host
                if not self._up():
                    self._raise_if_waited_out_locked()
                elif time.monotonic() >= deadline:
                    raise ConnectionError(f"no free {self.label} slot within the timeout")
                self._cond.wait(timeout=0.05)

    def wait_until_up(self) -> None:
        """Returns once a host is up; while none is, waits like :meth:`acquire` (at most the down wait)."""
        with self._cond:
            while True:
                self._probe_due_locked()
                if self._up():
                    return
                self._raise_if_waited_out_locked()
                self._cond.wait(timeout=0.05)

    def release(self, host: Host, *, seconds: float, tokens: int = 0, failed: bool = False,
                unreachable: bool = False, hung: bool = False, started: float | None = None) -> None:
        """Ends a request on ``host``. An answer marks a host that was taken out as up again, unless the request
        was sent before it went down (``started``, monotonic): that answer says nothing of the host since."""
        with self._cond:
            host.in_use -= 1
            host.requests += 1
            host.busy_s += seconds
            host.tokens += tokens
            if failed:
                host.failures += 1
            if unreachable or hung:
                self._mark_down_locked(host, hung=hung)
            elif not failed and (started is None or not host.down_until or started > host.down_mono):
                self._mark_up_locked(host)  # an answer to a request sent since: it is up, whatever another saw
            self._cond.notify_all()

    def mark_down(self, url: str, hung: bool = False) -> None:
        """Takes a host out of rotation until its next health check."""
        with self._cond:
            for host in self.hosts:
                if host.url == url:
                    self._mark_down_locked(host, hung=hung)

    def mark_excluded(self, url: str, reason: str) -> None:
        """Takes a host out for good (e.g. it serves another build of the model)."""
        with self._cond:
            self.hosts = [h for h in self.hosts if h.url != url]
            self.excluded[url] = reason

    def outage_counters(self) -> tuple[int, float]:
        """(hosts gone down so far, seconds with no host up so far, the current spell included)."""
        with self._cond:
            open_s = time.monotonic() - self.all_down_since if self.all_down_since is not None else 0.0
            return self.outages, self.blocked_s + open_s

    def snapshot(self) -> dict[str, dict]:
        now = time.monotonic()
        with self._cond:
            return {h.url: {"requests": h.requests, "failures": h.failures, "tokens": h.tokens,
                            "busy_s": round(h.busy_s, 2), "healthy": h.down_until == 0.0,
                            "tokens_per_s": round(h.tokens / h.busy_s, 1) if h.busy_s else 0.0,
                            "outages": h.outages,
                            "downtime_s": round(h.downtime_s + (now - h.down_mono if h.down_until else 0.0), 1)}
                    for h in self.hosts}
