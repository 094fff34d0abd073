"""The app's functions on small inputs, good and bad, with the bundled weights."""
import numpy as np
import pytest

import app


def editor(image, mask=None):
    layer = np.zeros(image.shape[:2] + (4,), np.uint8)
    if mask is not None:
        layer[mask] = (230, 30, 30, 150)
    return {"background": image, "layers": [layer], "composite": None}


def call(supports, query, uploads=None, query_upload=None):
    editors = supports + [None] * (app.MAX_SUPPORTS - len(supports))
    uploads = (uploads or []) + [None] * (app.MAX_SUPPORTS - len(uploads or []))
    return app.segment_episode(editors, uploads, query, query_upload)


def test_a_painted_episode_gives_k_predictions_and_scores(square_episode):
    (query, truth), supports = square_episode
    support_view, lstm, or_view, plot, gates, summary, warnings = call(
        [editor(i, m) for i, m in supports], editor(query, truth))
    assert len(support_view) == len(lstm) == len(or_view) == 3
    assert plot is not None and "IoU" in summary and warnings == []
    assert lstm[0][0].dtype == np.uint8 and lstm[0][0].shape[2] == 3
    assert gates.dtype == np.uint8 and gates.shape[0] > 3 * 200  # one row of gate maps per step


def test_uploaded_masks_of_another_size_and_rgba_images(square_episode):
    (query, _), supports = square_episode
    image, mask = supports[0]
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    small_mask = (mask[::2, ::2] * 255).astype(np.uint8)
    _, lstm, _, plot, _, _, warnings = call([editor(rgba)], editor(query), uploads=[small_mask])
    assert len(lstm) == 1 and plot is None and warnings == []


def test_supports_without_mask_are_skipped_with_a_warning(square_episode):
    (query, _), supports = square_episode
    image, mask = supports[0]
    full = np.ones_like(mask)
    values = [editor(image), editor(image, mask), editor(image, full)]
    support_view, lstm, _, _, _, summary, warnings = call(values, editor(query))
    assert len(lstm) == 1 and "support(s): 2" in summary
    assert any("Support 1 has no mask" in w for w in warnings)
    assert any("Support 3" in w and "whole image" in w for w in warnings)


def test_missing_inputs_give_clear_messages(square_episode):
    (query, _), supports = square_episode
    image, mask = supports[0]
    with pytest.raises(ValueError, match="query image"):
        call([editor(image, mask)], None)
    with pytest.raises(ValueError, match="at least one support"):
        call([], editor(query))
    with pytest.raises(ValueError, match="at least one support"):
        call([editor(image)], editor(query))
    # and the next good request still works
    assert len(call([editor(image, mask)], editor(query))[1]) == 1


def test_examples_load_into_the_inputs():
    examples = app.list_examples()
    assert len(examples) >= 2
    for folder in examples.values():
        values = app.load_example(folder)
        editors, uploads = values[:app.MAX_SUPPORTS], values[app.MAX_SUPPORTS:2 * app.MAX_SUPPORTS]
        query, query_mask = values[2 * app.MAX_SUPPORTS:2 * app.MAX_SUPPORTS + 2]
        loaded = [(e, m) for e, m in zip(editors, uploads) if e is not None]
        assert len(loaded) >= 3 and query.ndim == 3 and query_mask.shape == query.shape[:2]
        assert all(m.any() and m.shape == e.shape[:2] for e, m in loaded)
        # what the example puts on the page runs as it is
        supports = [{"background": e, "layers": [], "composite": None} for e, _ in loaded]
        outputs = call(supports, {"background": query, "layers": [], "composite": None}, [m for _, m in loaded], query_mask)
        assert len(outputs[1]) == len(loaded) and outputs[3] is not None
