"""The optional C accelerator of DKIM body canonicalization (docs/dkim.md, "Speed").

Built when a C compiler and the Python headers are at hand; without them the install goes on
(``optional=True``) and mailauth uses the pure-Python functions, with the same results.
Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("mailauth.dkim._canon", sources=["mailauth/dkim/_canon.c"], optional=True)
    ]
)
