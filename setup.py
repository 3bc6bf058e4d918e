"""The optional C extension (cutscope.tracer._fast); everything else is in pyproject.toml.

``optional=True``: a machine without a C compiler installs cutscope without it, and
cutscope runs its pure-Python hot paths (the same behaviour, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cutscope.tracer._fast", ["tracer/_fast.c"], optional=True,
                             extra_compile_args=["-O2"])])
