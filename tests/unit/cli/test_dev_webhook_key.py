"""`rating dev`'s own webhook-secret key: made once, owner-only, the same on every later run."""

from __future__ import annotations

import stat
from pathlib import Path

from rating_service.cli.dev import WEBHOOK_KEY_FILE, dev_webhook_secret_keys
from rating_service.core.encryption import EncryptionKeys


def test_the_first_run_makes_a_private_key_and_later_runs_keep_it(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / WEBHOOK_KEY_FILE
    made = dev_webhook_secret_keys(key_file)
    assert EncryptionKeys.parse(made).ids == ("dev",)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The secrets sealed in the embedded database open only with this key: never a new one.
    assert dev_webhook_secret_keys(key_file) == made
