"""A spool file: what a service could not hand on before it stopped, kept for the next start.

Both ends of the experience path hold experiences that wait for the next hop (the gateway for the decision
service, the decision service for Redis); a stop while that hop is down would lose them. At the stop they go
to a file of JSON lines, written whole or not at all (a partial file, then a rename), and the next start
reads them back first and removes the file. A file that cannot be read (not one a service wrote) is set
aside beside it, not lost and not read again; a file that cannot be written is logged, never raised: a
stop goes on.
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
    """``records`` to ``path`` as JSON lines (replacing any earlier file); True if they are kept."""
    if not records:
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
