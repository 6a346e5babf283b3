"""Serving settings that are decided from the machine: where uploads are kept."""

from __future__ import annotations

import os
import shutil

from serving.settings import memory_upload_dir


def test_upload_dir_is_used_only_with_room_for_the_requests(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    assert memory_upload_dir(1024, str(tmp_path)) == str(tmp_path)
    assert memory_upload_dir(free * 2, str(tmp_path)) is None
    assert memory_upload_dir(0, str(tmp_path / "missing")) is None


def test_upload_dir_must_be_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        expected = None if os.geteuid() != 0 else str(locked)  # root writes anywhere
        assert memory_upload_dir(0, str(locked)) == expected
    finally:
        locked.chmod(0o700)
