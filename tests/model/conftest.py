import pytest
import torch

from model.tiny import TinySizes, build_tiny_svd


@pytest.fixture(scope="session")
def tiny_parts():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return build_tiny_svd(TinySizes(num_frames=8))


@pytest.fixture(scope="session")
def tiny_settings():
    from core.config import load_config

    return load_config("tiny").model
