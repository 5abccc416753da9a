from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway


@pytest.fixture
async def gateway(redis_url: str) -> AsyncIterator[GatewayHandle]:
    """The real app on a real port, real Redis, the built-in simulator as its upstream."""
    async with run_gateway(gateway_settings(redis_url=redis_url)) as handle:
        yield handle
