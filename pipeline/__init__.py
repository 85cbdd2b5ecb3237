"""Prefect orchestration of the DVC pipeline and the `cfdg` command (pipeline/cli.py) that drives it.

Prefect settings are environment variables read when prefect is first imported, so they are
set here, before any module of this package imports it: no telemetry, and a generous start-up
timeout for the ephemeral server on slow machines. A user's own values win (setdefault).
"""

from __future__ import annotations

import os

PREFECT_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "DVC_NO_ANALYTICS": "1",
}
for _key, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
