"""`op_path`: run a test on each path of `mta_attention` (the fused CPU kernel and the pure-torch reference);
`fused_kernel`: a test of the kernel itself."""

import shutil

import pytest

from mta_ablate.attention import kernel


def _require_kernel():
    if kernel.ops() is None:
        if shutil.which("g++"):  # with a compiler, `make install` builds it: its absence is a failure
            pytest.fail(f"the fused CPU kernel is not available: {kernel.why_not()}")
        pytest.skip(f"no C++ compiler here: {kernel.why_not()}")


@pytest.fixture(params=["fused", "torch"])
def op_path(request):
    if request.param == "fused":
        _require_kernel()
    with kernel.path(request.param):
        yield request.param


@pytest.fixture
def fused_kernel():
    _require_kernel()
    return kernel.ops()
