import os
import sys
import warnings

import pytest

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TOOLS)
FIXTURES = os.path.join(REPO, "tests", "fixtures")
# the tiny OSCAR model (sd/, oscar.pkl, reference.safetensors); override with OSCAR_TINY=<dir>
TINY = os.environ.get("OSCAR_TINY", "/work/shared/reference/oscar-tiny")

sys.path.insert(0, TOOLS)
warnings.filterwarnings("ignore", category=FutureWarning)


def pytest_collection_modifyitems(config, items):
    if not os.path.isfile(os.path.join(TINY, "oscar.pkl")):
        skip = pytest.mark.skip(reason=f"tiny OSCAR model not found at {TINY} (set OSCAR_TINY)")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny():
    return TINY


@pytest.fixture(scope="session")
def ckpt(tiny):
    import convert_oscar

    return convert_oscar.load_checkpoint(os.path.join(tiny, "oscar.pkl"))


@pytest.fixture(scope="session")
def converted(tiny):
    """(tensors, metadata) of the f32 conversion, in memory."""
    import convert_oscar

    return convert_oscar.convert(os.path.join(tiny, "sd"), os.path.join(tiny, "oscar.pkl"), log=lambda *a: None)


@pytest.fixture(scope="session")
def converted_f16(tiny):
    """(tensors, metadata) of the f16 conversion, in memory."""
    import convert_oscar

    return convert_oscar.convert(os.path.join(tiny, "sd"), os.path.join(tiny, "oscar.pkl"), "f16",
                                 log=lambda *a: None)


@pytest.fixture(scope="session")
def reference(tiny):
    from safetensors.torch import load_file

    return load_file(os.path.join(tiny, "reference.safetensors"))
