"""Shared fixtures: fixed seeds, small CPU thread count."""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def generator():
    """A CPU generator with a fixed seed."""
    return torch.Generator().manual_seed(12345)
