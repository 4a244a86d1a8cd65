"""The gateway's downlink: incident notices from central, over the uplink's broker.

::

    downlink = Downlink(settings.uplink, gateway_id="gw-1", on_notice=handle)
    downlink.start()          # its own thread and connection; handle(notice) per notice
    downlink.status()         # the status JSON's "downlink" key
    downlink.stop()

    cue = apply_notice(daemon.incidents, notice)   # list it; True if the wearer should be cued

The message format is :mod:`firmware_shim.downlink_format`.
"""

from gateway.downlink._downlink import (
    MAX_REMEMBERED_NOTICES,
    PREFETCH_COUNT,
    Downlink,
    NoticeHandler,
)
from gateway.downlink._incident_list import MAX_CUE_AGE_S, MAX_INCIDENTS_SHOWN, apply_notice

__all__ = [
    "MAX_CUE_AGE_S",
    "MAX_INCIDENTS_SHOWN",
    "MAX_REMEMBERED_NOTICES",
    "PREFETCH_COUNT",
    "Downlink",
    "NoticeHandler",
    "apply_notice",
]
