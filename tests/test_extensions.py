"""A normal build must load every compiled twin: a silent fallback would pass for speed."""
import glob
import os

import pytest

from natsx._speedups import NO_EXTENSIONS, compiled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(os.path.basename(p)[1:-4] for p in glob.glob(os.path.join(ROOT, "natsx/_speedups/_*.pyx")))


@pytest.mark.parametrize("name", MODULES)
def test_compiled_twin_loads(name):
    if NO_EXTENSIONS:
        pytest.skip("NATSX_NO_EXTENSIONS is set: this run tests the pure twins")
    assert compiled(name), f"natsx._speedups._{name} did not import: the extension was not built"


@pytest.mark.parametrize("name", MODULES)
def test_every_compiled_module_has_a_pure_twin(name):
    assert os.path.exists(os.path.join(ROOT, f"natsx/_speedups/{name}_py.py"))
