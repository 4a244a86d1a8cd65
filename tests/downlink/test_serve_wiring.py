"""When ``incidents serve`` sends gateway notices over RabbitMQ: only when ``[amqp] url`` is configured."""

from __future__ import annotations

from pathlib import Path

from central.downlink import AmqpGatewayNotifier, notifier_from_settings
from central.settings import CentralSection, CentralSettings


def test_without_amqp_settings_serve_keeps_notices_queued(tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'[central]\nstate_dir = "{tmp_path}"\n')
    settings = CentralSettings(central=CentralSection(state_dir=tmp_path))
    assert notifier_from_settings(settings, config, env={}) is None
    assert notifier_from_settings(settings, None, env={}) is None
    made = notifier_from_settings(settings, None, env={"PULSEGATE_AMQP_URL": settings.amqp.url})
    assert isinstance(made, AmqpGatewayNotifier)
    config.write_text(f'[central]\nstate_dir = "{tmp_path}"\n[amqp]\nurl = "amqp://guest:guest@127.0.0.1:5672/%2F"\n')
    assert isinstance(notifier_from_settings(settings, config, env={}), AmqpGatewayNotifier)
