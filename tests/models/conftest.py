"""One torch thread for these many tiny forward passes: on a shared 2-core machine, intra-op
threads spin-wait on each other and made this folder ~5x slower (87 s vs 15 s)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
