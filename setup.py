"""The optional C extensions (cutscope.tracer._fast, cutscope.integrations._fastq,
cutscope.integrations.sockets._fastsock); everything else is in pyproject.toml.

``optional=True``: a machine without a C compiler installs cutscope without it, and
cutscope runs its pure-Python hot paths (the same behaviour, slower).
"""

from setuptools import Extension, setup

# tracer/_fast.h: helpers every extension includes; tracer/_fastapi.h: the core's C entry
# points, which the integrations' extensions take from the core's capsule.
setup(ext_modules=[Extension("cutscope.tracer._fast", ["tracer/_fast.c"], optional=True,
                             include_dirs=["tracer"],
                             depends=["tracer/_fast.h", "tracer/_fastapi.h"],
                             extra_compile_args=["-O2"]),
                   Extension("cutscope.integrations._fastq", ["integrations/_fastq.c"],
                             optional=True, include_dirs=["tracer"], depends=["tracer/_fast.h"],
                             extra_compile_args=["-O2"]),
                   Extension("cutscope.integrations.sockets._fastsock",
                             ["integrations/sockets/_fastsock.c"], optional=True,
                             include_dirs=["tracer"],
                             depends=["tracer/_fast.h", "tracer/_fastapi.h"],
                             extra_compile_args=["-O2"])])
