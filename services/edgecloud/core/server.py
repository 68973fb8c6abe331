"""Run an app factory under uvicorn: the one ``main()`` body every service shares."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from edgecloud.core.settings import ServerSettings


def serve(app: FastAPI, settings: ServerSettings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)
