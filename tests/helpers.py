"""Helpers that more than one test module uses."""
import contextlib
import dataclasses


@contextlib.contextmanager
def configured(model, **settings):
    """The model with `settings` in its config for the block; its config is put back after."""
    before = model.config
    model.config = dataclasses.replace(before, **settings)
    try:
        yield model
    finally:
        model.config = before
