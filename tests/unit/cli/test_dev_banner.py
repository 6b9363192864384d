"""What `rating dev` prints runs as printed: the operator exports and the addresses to call."""

from __future__ import annotations

import shlex

import pytest

from rating_service.cli.dev import print_endpoints
from rating_service.settings import Settings


def test_the_banner_exports_the_stack_s_own_database_and_temporal_and_dials_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        # An embedded database's URL: a socket directory with a space, escaped and not.
        database_url="postgresql://postgres:@/rating?host=%2Fhome%2Fyou%2Fmy work%2Fpgdata",
        temporal_address="127.0.0.1:7233",
        listen_address="0.0.0.0:50051",  # listening everywhere: not an address to dial
    )
    print_endpoints(settings, 50051, None, None, "key_x.secret")
    printed = capsys.readouterr().out
    # What a shell makes of each `export` line.
    exported = dict(
        shlex.split(line)[1].split("=", 1)
        for line in printed.splitlines()
        if line.strip().startswith("export RATING_")
    )
    assert exported == {
        "RATING_API_KEY": "key_x.secret",
        "RATING_API_ADDRESS": "127.0.0.1:50051",
        "RATING_DATABASE_URL": settings.database_url,
        "RATING_TEMPORAL_ADDRESS": "127.0.0.1:7233",
    }
    assert "http://127.0.0.1:50051/rating.v1.AdminService/WhoAmI" in printed
    assert "0.0.0.0" not in printed
    assert " invoices list\n" in printed  # through the API: the key names the tenant
    assert "keys create --tenant demo --role ops" in printed  # database-direct: names it
