"""A MariaDB/MySQL server that hangs up during the connection is a database error like any
other, never a crash: asyncmy raises a bare RuntimeError when the peer closes the socket
before its first socket option is set (seen with a daemon starting behind a proxy that
refuses), and store/engine.py reports it as the driver's lost-connection error."""

from __future__ import annotations

import asyncmy
import pytest

from audit_job.errors import StoreUnavailable
from audit_job.store.engine import check_connection, create_engine


async def test_a_hang_up_while_connecting_is_a_lost_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def hung_up(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("Transport does not expose socket instance")  # asyncmy's words

    monkeypatch.setattr(asyncmy, "connect", hung_up)
    engine = create_engine("mysql+asyncmy://audit:hunter2@127.0.0.1:1/audit")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await check_connection(engine)
    finally:
        await engine.dispose()
    message = str(caught.value)
    assert message == (
        "cannot connect to database mysql+asyncmy://audit:***@127.0.0.1:1/audit: "
        "(2013, 'Lost connection: Transport does not expose socket instance')"
    )
