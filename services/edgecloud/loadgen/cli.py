"""``edgecloud-loadgen``: send real prompts of every service type to an OpenAI-compatible URL and report.

The flags are the fields of ``LoadgenSettings`` (``LOADGEN_*`` variables work too; a flag wins). Exit
codes: 0 done, 1 the target is unreachable or no request succeeded, 2 bad arguments, 130 interrupted.
Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, NoReturn, get_args

from pydantic import ValidationError
from pydantic_settings import SettingsError

from edgecloud.loadgen.settings import Arrival, LoadgenSettings

PROG = "edgecloud-loadgen"
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# Flags whose form differs from the field: booleans that switch something on or off, with their help.
SWITCHES = {
    "allow_remote": ("--allow-remote", "store_true", "allow a target that is not on this machine (loopback)"),
    "type_hint": ("--no-type-hint", "store_false", "do not send x-service-type: the gateway's classifier decides"),
    "progress": ("--no-progress", "store_false", "no progress bar on stderr"),
}
# Value types argparse converts; the rest reach the settings as text (comma lists, paths, names).
SCALAR_TYPES: dict[str, type] = {
    "burstiness": float, "ramp_up_s": float, "num_requests": int, "duration_s": float, "timeout_s": float,
    "preflight_timeout_s": float, "num_users": int, "quality_share": float, "max_tokens": int,
    "output_tokens_mean": int, "seed": int, "target_delay_s": float, "quality_penalty": float,
}  # fmt: skip
METAVARS = {
    "base_url": "URL", "model": "NAME", "api_key": "KEY", "burstiness": "B", "request_rate": "R[,R...]",
    "concurrency": "N[,N...]", "ramp_up_s": "S", "num_requests": "N", "duration_s": "S", "timeout_s": "S",
    "preflight_timeout_s": "S", "num_users": "K", "quality_share": "P", "service_types": "TYPE[,TYPE...]",
    "max_tokens": "N", "output_tokens_mean": "M", "seed": "N", "target_delay_s": "S", "quality_penalty": "R",
    "output_dir": "DIR", "export_prompts": "FILE",
}  # fmt: skip
DESCRIPTION = (
    "Send real prompts of every service type to an OpenAI-compatible URL with Poisson, gamma or closed-loop "
    "arrivals, and report TTFT, TPOT, ITL, e2e, throughput, goodput, success rate and reward (docs/loadgen.md). "
    "Every flag is also a LOADGEN_* variable; a flag wins. Exit codes: 0 done, 1 target unreachable or no "
    "request succeeded, 2 bad arguments, 130 interrupted."
)


def flag(field: str) -> str:
    return SWITCHES[field][0] if field in SWITCHES else "--" + field.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block: the message and where to look."""
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """One flag per settings field, its help the field's description and default.

    Flags not given are left out (SUPPRESS), so ``LOADGEN_*`` variables and the defaults apply and the
    settings know which flags were given (they refuse contradictory ones).
    """
    parser = _Parser(prog=PROG, description=DESCRIPTION, argument_default=argparse.SUPPRESS)
    for name, field in LoadgenSettings.model_fields.items():
        help_text = str(field.description)
        default = field.default
        if default is not None and field.default_factory is None:  # the others say their default in words
            shown = ",".join(str(item) for item in default) if isinstance(default, list) else default
            help_text += f" (default: {shown})"
        if name in SWITCHES:
            parser.add_argument(flag(name), dest=name, action=SWITCHES[name][1], help=SWITCHES[name][2])
        elif name == "arrival":
            parser.add_argument(flag(name), dest=name, choices=get_args(Arrival), help=help_text)
        elif name == "goodput":
            parser.add_argument(flag(name), dest=name, nargs="+", metavar="METRIC:MS", help=help_text)
        else:
            parser.add_argument(flag(name), dest=name, type=SCALAR_TYPES.get(name, str),
                                metavar=METAVARS.get(name), help=help_text)  # fmt: skip
    return parser


def validation_message(error: ValidationError) -> str:
    """The settings' complaints on one line, each under the flag it concerns."""
    parts = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        location = item["loc"]
        if location and isinstance(location[0], str) and location[0] in LoadgenSettings.model_fields:
            given = item.get("input")
            # Our own checks (value_error) quote the value already; pydantic's built-in ones do not.
            quoted = item["type"] == "value_error" or given is None or isinstance(given, dict | list)
            shown = "" if quoted else f" (got {given!r})"
            message = f"{flag(location[0])}: {message}{shown}"
        parts.append(message)
    return "; ".join(parts)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def run_cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = LoadgenSettings(**vars(args))
    except ValidationError as error:
        return _fail(validation_message(error), EXIT_USAGE)
    except SettingsError as error:
        return _fail(f"a LOADGEN_* variable is malformed: {error}", EXIT_USAGE)
    # The run's modules (aiohttp, numpy, the corpora) load only once the arguments are known to be good.
    from edgecloud.loadgen.client import TargetUnreachable
    from edgecloud.loadgen.corpus import load_corpus
    from edgecloud.loadgen.report import build_report, export_prompts, summary_table, write_outputs
    from edgecloud.loadgen.runner import run
    from edgecloud.loadgen.workload import Workload

    corpus = load_corpus()
    workload = Workload.from_settings(settings, corpus)
    if settings.export_prompts is not None:
        count = export_prompts(workload.closed_loop(settings.request_limit), settings.export_prompts)
        print(f"wrote {count} requests to {settings.export_prompts}")
        return 0
    try:
        result = asyncio.run(run(settings, workload))
    except TargetUnreachable as error:
        return _fail(f"target unreachable: {error}", EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    if result.served_models and settings.model not in result.served_models:
        listed = ", ".join(result.served_models)
        print(f"{PROG}: warning: {settings.model!r} is not among the target's models ({listed})", file=sys.stderr)
    report: dict[str, Any] = build_report(result, settings, corpus)
    print(summary_table(report))
    if settings.output_dir is not None:
        for path in write_outputs(result, report, settings, settings.output_dir):
            print(f"wrote {path}")
    if not any(record.ok for point in result.points for record in point.records):
        return _fail("no request succeeded (errors above)", EXIT_FAILED)
    return 0


def main() -> None:
    sys.exit(run_cli())
