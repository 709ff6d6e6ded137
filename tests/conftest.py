import os

import pytest
import torch

os.environ.setdefault("IGAT_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "igat-cache"))
# Tiny models gain nothing from intra-op threads, and integration tests run worker processes
# beside pytest on a 2-core machine: one thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
