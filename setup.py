"""Build natsx, compiling every Cython module in natsx/_speedups/.

NATSX_NO_EXTENSIONS=1 at build time skips compilation and installs only the pure-Python
twins; the build prints which one it made.
"""
import glob
import os
import sys

from setuptools import setup

NO_EXTENSIONS = os.environ.get("NATSX_NO_EXTENSIONS", "") not in ("", "0")


def extensions():
    if NO_EXTENSIONS:
        print("natsx: building WITHOUT extensions (pure-Python twins only)", file=sys.stderr)
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    sources = sorted(glob.glob("natsx/_speedups/_*.pyx"))
    exts = [
        Extension(
            "natsx._speedups." + os.path.splitext(os.path.basename(src))[0],
            [src],
            extra_compile_args=["-O3"],
        )
        for src in sources
    ]
    print("natsx: building WITH extensions: " + ", ".join(e.name for e in exts), file=sys.stderr)
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    )


setup(ext_modules=extensions())
