"""The workarounds in demo/gradio_fixes.py were written for one Gradio version: these fail loudly when Gradio is
upgraded, so that each workaround is checked again (and dropped where the new version fixed what it works around)."""
import gradio as gr
from gradio import processing_utils, utils

from demo import gradio_fixes


def test_gradio_is_the_version_the_workarounds_were_written_for():
    assert gr.__version__ == gradio_fixes.GRADIO_VERSION, (
        f"Gradio {gr.__version__} is installed, the workarounds in demo/gradio_fixes.py were written for "
        f"{gradio_fixes.GRADIO_VERSION}: check each one against the new version (its docstring lists them), drop what "
        "is fixed, then set GRADIO_VERSION")


def test_what_the_workarounds_hook_into_is_still_there():
    editor = gr.ImageEditor(type="filepath")
    assert callable(editor.convert_and_format_image) and callable(gr.Image(type="filepath").preprocess)
    assert callable(processing_utils.save_bytes_to_cache) and callable(processing_utils.save_file_to_cache)
    assert callable(utils.get_upload_folder)
