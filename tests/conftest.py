import pytest
import torch

import mechscope as ms

# One thread: on a shared 2-core machine, small matmuls on two threads stall when the other core is busy.
torch.set_num_threads(1)

FAMILIES = ["gpt2", "llama", "gpt_neox", "gemma", "gemma2"]


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, ms.Model]:
    return {f: ms.tiny(f, seed=0) for f in FAMILIES}


@pytest.fixture(params=FAMILIES)
def tiny(request, tiny_models) -> ms.Model:
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def smol() -> ms.Model:
    return ms.load("smollm2-135m")


@pytest.fixture(scope="module")
def organism_cache(tmp_path_factory):
    """A fresh organism cache for one test module (its organisms are built once and shared by its tests).

    Bench modules opt in with ``pytestmark = pytest.mark.usefixtures("organism_cache")``; the built-in model's
    cache stays where it is.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
