"""ITIL incident management: incidents, SLAs, escalation, PagerDuty, runbooks."""
