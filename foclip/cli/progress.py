"""One progress display for every long command: rich bars on a terminal, plain lines everywhere else.

Off a terminal (a CI log, ``| tee``, a file) rich cannot redraw a bar in place: it prints nothing
while the work runs and one cut-off bar at the end (``━━━ 32… 0:…``). :func:`make_progress` therefore
returns rich's :class:`~rich.progress.Progress` on a terminal and a :class:`PlainProgress` elsewhere,
which prints one line every few seconds: what, done/total, rate and time left, e.g.::

    progress: image-steps 40/120 (33 %), 1.9/s, 42 s left | images 2/7 (29 %) | score now 31.2

Both take the same calls (``add_task``, ``update``, ``advance``, ``console.print``), so a command
writes its progress once. A run shorter than one interval prints only the closing ``done:`` line
(nothing at all when ``transient``, as rich erases transient bars).
``FOCLIP_PROGRESS_SECONDS`` sets the interval (default 5).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.text import Text

INTERVAL_ENV = "FOCLIP_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 5.0
# Without any advance, a line still comes this often, so a log shows the run is alive.
HEARTBEAT_INTERVALS = 12


def interval_seconds() -> float:
    """Seconds between plain progress lines (``FOCLIP_PROGRESS_SECONDS``, default 5; at least 0.05)."""
    try:
        return max(float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)), 0.05)
    except ValueError:
        return DEFAULT_INTERVAL


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: a duration a person reads at a glance."""
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def estimate_line(what: str, seconds_left: float, note: str = "") -> str:
    """``estimate: WHAT -> about 7 min 05 s left, done near 14:32.`` (plus ``note``).

    Args:
        what: what was measured and how much is left (``640 image-steps at 1.9/s``).
        seconds_left: the projection.
        note: a sentence to append (``Ctrl-C stops; a rerun resumes.``).
    """
    import datetime

    finish = (datetime.datetime.now() + datetime.timedelta(seconds=seconds_left)).strftime("%H:%M")
    return f"estimate: {what} -> about {duration(seconds_left)} left, done near {finish}." + (f" {note}" if note else "")


class Estimator:
    """Says once, early, how long a task will take, from its first measured rate.

    The estimate comes once ``min_seconds`` have passed and some work is done, and only for work
    projected to outlast ``min_total_seconds`` (a short run needs no estimate).
    """

    def __init__(self, min_seconds: float = 10.0, min_total_seconds: float = 30.0) -> None:
        self.min_seconds, self.min_total_seconds = min_seconds, min_total_seconds
        self._started: dict[str, float] = {}
        self._said: set[str] = set()

    def start(self, key: str) -> None:
        """Start the clock of ``key``."""
        self._started[key] = time.monotonic()
        self._said.discard(key)

    def line(self, key: str, what: str, done: float, total: float, note: str = "") -> str | None:
        """The estimate line of ``key`` at ``done`` of ``total``, the first time one is due; else None."""
        elapsed = time.monotonic() - self._started.get(key, time.monotonic())
        if key in self._said or done <= 0 or elapsed < self.min_seconds or done >= total:
            return None
        self._said.add(key)
        rate = done / elapsed
        left = (total - done) / rate
        if elapsed + left < self.min_total_seconds:
            return None
        return estimate_line(f"{what}: {total - done:g} left at {rate:.3g}/s", left, note)


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def line(self, now: float) -> str:
        text = f"{self.description} {self.completed:g}"
        if self.total:
            text += f"/{self.total:g} ({100 * self.completed / self.total:.0f} %)"
        elapsed = now - self.started
        if self.completed > 0 and elapsed > 0:
            rate = self.completed / elapsed
            text += f", {rate:.3g}/s"
            if self.total and self.completed < self.total:
                text += f", {duration((self.total - self.completed) / rate)} left"
        info = str(self.fields.get("info") or "")
        return f"{text} | {info}" if info else text


class PlainProgress:
    """rich's ``Progress`` calls, drawn as one plain line every few seconds (for logs and pipes).

    A background thread prints a line when something moved since the last one (or, failing that,
    every :data:`HEARTBEAT_INTERVALS` intervals); the first line comes one interval after the start.
    At the end a closing ``done:`` line gives the final counts and notes, as rich prints its final
    bars; a ``transient`` one (rich erases those) closes with it only when it printed a line before.

    Args:
        console: where the lines go (the console the bars would have used).
        interval: seconds between lines (default :func:`interval_seconds`).
        transient: no closing line for a run shorter than one interval.
    """

    def __init__(self, console: Console, interval: float | None = None, transient: bool = False) -> None:
        self.console = console
        self.interval = interval_seconds() if interval is None else interval
        self.transient = transient
        self._tasks: dict[int, _Task] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = False
        self._printed = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PlainProgress:  # noqa: PYI034 - py310 target, no typing.Self
        self._thread = threading.Thread(target=self._tick, name="foclip-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._tasks and (self._printed or not self.transient):
            self._emit("done")

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0,
                 completed: float = 0, visible: bool = True, **fields: Any) -> int:
        """Add a task (rich's signature); returns its id."""
        del start, visible
        with self._lock:
            task_id = len(self._tasks)
            self._tasks[task_id] = _Task(Text.from_markup(description).plain, total, float(completed), dict(fields))
            self._changed = True
        return task_id

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields: Any) -> None:
        """Move or change a task (rich's keywords; ``refresh`` and ``visible`` are accepted and ignored)."""
        fields.pop("refresh", None)
        fields.pop("visible", None)
        with self._lock:
            t = self._tasks[task_id]
            if total is not None:
                t.total = total
            if completed is not None:
                t.completed = float(completed)
            if advance:
                t.completed += advance
            if description is not None:
                t.description = Text.from_markup(description).plain
            t.fields.update(fields)
            self._changed = True

    def advance(self, task_id: int, advance: float = 1) -> None:
        """Add ``advance`` to a task's completed count."""
        self.update(task_id, advance=advance)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print above the progress, as rich's ``Progress.print`` does."""
        self.console.print(*objects, **kwargs)

    def _tick(self) -> None:
        quiet = 0
        while not self._stop.wait(self.interval):
            quiet += 1
            if self._changed or quiet >= HEARTBEAT_INTERVALS:
                self._emit("progress")
                quiet = 0

    def _emit(self, label: str) -> None:
        now = time.monotonic()
        with self._lock:
            parts = [t.line(now) for t in self._tasks.values()]
            self._changed = False
        if parts:
            self._printed = True
            self.console.print(f"{label}: " + " | ".join(parts), markup=False, highlight=False, soft_wrap=True)


def make_progress(*columns: Any, console: Console, transient: bool = False, disable: bool = False) -> Progress | PlainProgress:
    """Progress for a long command: rich bars with ``columns`` on a terminal, :class:`PlainProgress` elsewhere.

    Args:
        columns: rich progress columns (used on a terminal only).
        console: the console the progress belongs to (stdout or stderr).
        transient: remove the bars when done (terminal only).
        disable: show nothing (both kinds).

    Returns:
        A context manager with rich's ``add_task`` / ``update`` / ``advance`` / ``console``.
    """
    if console.is_terminal or disable:
        return Progress(*columns, console=console, transient=transient, disable=disable)
    return PlainProgress(console, transient=transient)


__all__ = ["Estimator", "PlainProgress", "duration", "estimate_line", "interval_seconds", "make_progress"]
