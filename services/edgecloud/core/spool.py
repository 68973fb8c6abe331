"""A spool file: what a service could not hand on before it stopped, kept for the next start.

Both ends of the experience path hold experiences that wait for the next hop (the gateway for the decision
service, the decision service for Redis); a stop while that hop is down would lose them. At the stop they go
to a file of JSON lines, written whole or not at all (a partial file, then a rename), and the next start
reads them back first and removes the file. A file that cannot be read (not one a service wrote) is set
aside beside it, not lost and not read again; a file that cannot be written is logged, never raised: a
stop goes on.

A crash (a kill, an OOM kill) has no stop. So while the hop is down, ``OutageSpool`` keeps the same file
current: each retry appends what arrived since the last one, and the file goes once nothing waits. A crash
then loses only what arrived within the last retry interval. An experience in the file that was stored before
the crash is offered again by the next start and skipped by its ``experience_id`` (the pool's recorded ids).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def write_spool(path: Path | None, records: Sequence[dict[str, Any]], what: str, log: logging.Logger) -> bool:
    """``records`` to ``path`` as JSON lines, replacing any earlier file (with none, an outage's file is removed:
    what it held went on); True if they are kept."""
    if not records:
        if path is not None:
            path.unlink(missing_ok=True)
        return True
    if path is None:
        log.error("stopping with %d %s not handed on and no spool file: lost", len(records), what)
        return False
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text("".join(json.dumps(record) + "\n" for record in records))
        os.replace(partial, path)  # whole or not at all
    except OSError as error:
        log.error("stopping with %d %s not handed on; the spool file %s cannot be written (%r): lost",
                  len(records), what, path, error)  # fmt: skip
        return False
    log.warning("stopping with %d %s not handed on: kept in %s", len(records), what, path)
    return True


def read_spool(path: Path | None, parse: Callable[[dict[str, Any]], T], what: str, log: logging.Logger) -> list[T]:
    """What an earlier run spooled to ``path``, each record through ``parse``; the file is removed once read."""
    if path is None or not path.exists():
        return []
    held: list[T] = []
    try:
        for line in path.read_text().splitlines():
            held.append(parse(json.loads(line)))
    except (ValueError, KeyError, TypeError) as error:  # not a file a service wrote: kept aside, not lost
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        log.error("spool file %s unreadable (%r), moved to %s; kept %d %s of it", path, error, aside, len(held), what)
    else:
        path.unlink()
    log.info("read %d %s spooled by the last run; they go first", len(held), what)
    return held


class OutageSpool:
    """The spool file kept current while experiences wait on a hop that is down (the module docstring)."""

    def __init__(self, path: Path | None, log: logging.Logger):
        self.path = path
        self.log = log
        self.holding = False  # the file holds what waited when it was last written
        self._arrived = 0

    def keep(self, waiting: Sequence[T], arrived: int, record: Callable[[T], dict[str, Any]]) -> None:
        """Append to the file what ``waiting`` (oldest first) gained since the last call: its last ``arrived`` minus
        the last call's ``arrived`` (a running count of what joined it); on the first call of an outage, all of it."""
        if self.path is None:
            return
        new = len(waiting) if not self.holding else min(arrived - self._arrived, len(waiting))
        try:
            with self.path.open("a" if self.holding else "w") as file:
                file.writelines(json.dumps(record(item)) + "\n" for item in waiting[len(waiting) - new :])
        except OSError as error:
            self.log.debug("spool file %s not kept current (%r)", self.path, error)
            return
        self.holding = True
        self._arrived = arrived

    def clear(self) -> None:
        """Nothing waits any more: the file goes (a copy of what went on would be offered again at the next start)."""
        if self.holding and self.path is not None:
            self.path.unlink(missing_ok=True)
        self.holding = False
