"""Which staging core maps the messages: the compiled one when it is built and allowed, else the Python reference.

``PY_LOAD_EUDRAVIGILANCE_MAPPER`` (or the ``mapper`` setting) chooses: ``auto`` (the default: compiled
when built), ``compiled`` (an error if it is not built) or ``python``. A build that failed is reported
once per process, with the reason, and the load goes on with the Python mapper. A build that does not
match this release (its plan or its bytes differ from the Python mapper's: built from other sources,
or against another lxml) is reported loudly, as a :class:`CompiledCoreMismatch` warning too.
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import cache

from py_load_eudravigilance.staging.reference import ReferenceCore

log = logging.getLogger(__name__)
MAPPER_ENV = "PY_LOAD_EUDRAVIGILANCE_MAPPER"
MAPPER_CHOICES = ("auto", "compiled", "python")


class CompiledCoreUnavailable(RuntimeError):
    """The compiled mapper was asked for but is not built (or does not work with the installed lxml)."""


class CompiledCoreMismatch(UserWarning):
    """The compiled mapper is built but does not stage what this release's Python mapper stages: ``auto`` maps with the
    Python mapper, several times slower, until it is rebuilt (make install)."""


@cache
def _compiled_core_state() -> tuple[bool, str | None]:
    """Whether the compiled core is built, and None when it also passes its self-test, else why not."""
    try:
        from py_load_eudravigilance.staging import compiled
    except ImportError as exc:
        return False, f"the compiled mapper is not built ({exc})"
    return True, compiled.self_test()


def compiled_core_problem() -> str | None:
    """None when the compiled core imports and passes its self-test, else why not."""
    return _compiled_core_state()[1]


def chosen_mapper(choice: str | None = None) -> str:
    """``compiled`` or ``python``, as ``choice`` (else the environment, else ``auto``) asks."""
    choice = (choice or os.environ.get(MAPPER_ENV) or "auto").strip().lower()
    if choice not in MAPPER_CHOICES:
        raise ValueError(f"{MAPPER_ENV} must be one of {', '.join(MAPPER_CHOICES)}, not {choice!r}")
    if choice == "python":
        return "python"
    built, problem = _compiled_core_state()
    if problem is None:
        return "compiled"
    if choice == "compiled":
        raise CompiledCoreUnavailable(problem)
    _warn_once(problem, built)
    return "python"


@cache
def _warn_once(problem: str, built: bool) -> None:
    message = f"{problem}; mapping with the Python mapper, several times slower (make install builds it)"
    if built:  # a build that disagrees with this release is a drift to fix, not a missing optional speed-up
        message = f"{problem}; mapping with the Python mapper: the load will be several times slower until make install rebuilds it"
        warnings.warn(message, CompiledCoreMismatch, stacklevel=3)
    log.warning("%s", message)


def create_core(choice: str | None = None):  # type: ignore[no-untyped-def]
    """A new staging core of the chosen kind."""
    if chosen_mapper(choice) == "compiled":
        from py_load_eudravigilance.staging.compiled import CompiledCore

        return CompiledCore()
    return ReferenceCore()
