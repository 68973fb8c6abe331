"""Run an app factory under uvicorn: the one ``main()`` body every service shares."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn
from fastapi import FastAPI

from edgecloud.core.settings import ServerSettings


def serve(app: FastAPI, settings: ServerSettings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)


def listen_overrides(description: str, env_prefix: str) -> dict[str, Any]:
    """``--host`` and ``--port`` from the command line, as settings overrides (they beat the environment)."""
    parser = argparse.ArgumentParser(description=f"{description} (settings: {env_prefix}* environment variables).")
    parser.add_argument("--host", help=f"listen address ({env_prefix}HOST)")
    parser.add_argument("--port", type=int, help=f"listen port ({env_prefix}PORT)")
    return {key: value for key, value in vars(parser.parse_args()).items() if value is not None}
