"""The page's inputs, in the order Run hands them over: the one place that knows the slot layout.

`Inputs` holds one value per input, whatever the value is: the components themselves (layout), their values as
Gradio hands them to a handler, or files for `gradio_client` (tests, benchmarks, the warm-up)."""
from dataclasses import dataclass
from typing import Any

from fss_demo.images import MAX_SUPPORTS

SLOTS = MAX_SUPPORTS  # support slots on the page (the model's cap)
FIRST_SHOWN = 5       # support slots shown at start; the rest behind "Add a support"


def editor_value(photo):
    """An image editor's value holding `photo` (a path, or a file for gradio_client) with nothing painted on it."""
    return None if photo is None else {"background": photo, "layers": [], "composite": None}


@dataclass
class Inputs:
    editors: list        # SLOTS support editors (photo + painted layers)
    masks: list          # SLOTS uploaded support masks
    query: Any           # the query editor
    query_mask: Any      # the query's uploaded true mask

    def values(self):
        """The flat list, in the order of the page's components and of /run's parameters."""
        return list(self.editors) + list(self.masks) + [self.query, self.query_mask]

    @classmethod
    def from_values(cls, values):
        values = list(values)
        if len(values) != 2 * SLOTS + 2:
            raise ValueError(f"expected {2 * SLOTS + 2} input values, got {len(values)}")
        return cls(values[:SLOTS], values[SLOTS:2 * SLOTS], values[2 * SLOTS], values[2 * SLOTS + 1])

    @classmethod
    def of_files(cls, supports, masks, query, truth=None, file=lambda path: path):
        """Inputs holding photo files in the editors, masks in the mask slots (None where a slot has none):
        `supports` and `masks` in slot order, `file` applied to every path (e.g. gradio_client's handle_file)."""
        if len(supports) > SLOTS or len(masks) > SLOTS:
            raise ValueError(f"the page has {SLOTS} support slots")
        fill = lambda items: [None if item is None else file(item) for item in items] + [None] * (SLOTS - len(items))
        return cls([editor_value(photo) for photo in fill(supports)], fill(masks),
                   editor_value(None if query is None else file(query)), None if truth is None else file(truth))

    @classmethod
    def of_example(cls, example, file=lambda path: path):
        """An example (fss_demo.examples.ExampleFiles) as the page shows it: photos in the editors, masks in the
        slots under them, the query and its true mask."""
        supports = example.supports[:SLOTS]
        return cls.of_files([image for image, _ in supports], [mask for _, mask in supports], example.query,
                            example.truth, file)
