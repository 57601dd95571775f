"""Exceptions that carry a message meant for the user, not a traceback."""

from __future__ import annotations


class AllInOneError(Exception):
    """Base class: something the user can fix; `str(error)` says what and how."""


class InputError(AllInOneError, ValueError):
    """The image, axes, regions or options given cannot be used."""


class ModelFileError(AllInOneError):
    """A weights file or model card is missing, corrupted, unsafe or mismatched."""


class OutputExistsError(AllInOneError, FileExistsError):
    """Writing would overwrite an existing file without permission."""


class Cancelled(AllInOneError):
    """The user cancelled a running job; nothing was written."""


class AllInOneWarning(RuntimeWarning):
    """A job went on otherwise than asked (e.g. on the CPU after the GPU ran out of memory) and
    still succeeded; the user should be told."""
