import pytest
from rt_helpers import build_models


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Paths of the tiny contract-following ONNX models, built once per session."""
    return build_models(tmp_path_factory.mktemp("onnx"))
