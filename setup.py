"""Builds the compiled staging core (Cython, against the headers lxml ships); the rest of the package is in pyproject.toml.

The extension is optional: without a C++ compiler, or if Cython or lxml's headers are missing, the
package installs without it and maps with the Python mapper (``staging/cores.py`` says so once).
"""

from setuptools import Extension, setup


def compiled_core() -> list[Extension]:
    try:
        import lxml
        from Cython.Build import cythonize
    except ImportError as exc:
        print(f"warning: not building the compiled mapper ({exc}); the Python mapper will be used")
        return []
    extension = Extension(
        "py_load_eudravigilance.mapping._core",
        ["py_load_eudravigilance/mapping/_core.pyx"],
        include_dirs=lxml.get_include(),
        language="c++",
        extra_compile_args=["-O2"],
        optional=True,  # a failed compile leaves the Python mapper, not a failed install
    )
    unmapped = Extension(  # the unmapped-value count's walk (mapping/unmapped.py)
        "py_load_eudravigilance.mapping._unmapped",
        ["py_load_eudravigilance/mapping/_unmapped.pyx"],
        include_dirs=lxml.get_include(),
        language="c++",
        extra_compile_args=["-O2"],
        optional=True,
    )
    return cythonize([extension, unmapped], language_level=3, quiet=True)


setup(ext_modules=compiled_core())
