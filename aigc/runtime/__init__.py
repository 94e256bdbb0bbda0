"""The function runtime shared by every template (each links to it; images carry the files).

A handler module defines `handle(event, context)` and/or a `model` (a `Model`
subclass instance); see docs/architecture.md.
"""

from . import errors
from .handler import Context, Event
from .model import Model, TensorSpec

__all__ = ["Context", "Event", "Model", "TensorSpec", "errors"]
