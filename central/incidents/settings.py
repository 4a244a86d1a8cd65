"""Settings of the incident service: sections [incidents], [pagerduty], [runbooks]."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IncidentSettings:
    """[incidents]"""

    listen_address: str = "127.0.0.1:9465"


@dataclass
class PagerDutySettings:
    """[pagerduty]"""

    enabled: bool = False


@dataclass
class RunbookSettings:
    """[runbooks]"""

    enabled: bool = False
