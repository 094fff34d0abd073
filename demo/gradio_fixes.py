"""Every workaround for Gradio 6.31 in one place. Each says what it works around; tests/test_gradio_fixes.py fails
loudly when Gradio is upgraded, so that each is checked again (and dropped where the new Gradio fixed it).

1. receive_files: image inputs hand the handler the file as sent, undecoded (Gradio's decoding drops EXIF rotation
   and 16-bit depth, and fails on a bad file with a bare "Error").
2. picture_file / as_files: returned pictures written whole, once, named by content (Gradio rewrites a returned
   array's file in place on every request, so a concurrent download can get it half-written).
3. cached_copy / as_file_data / the browser's withUrls (browser.js): the bundled examples are put into the page by
   the browser, not by a server event, so they go in as hand-made FileData with the URL the browser fetches.
4. Twin editors (layout.py): the page's image editors are never inputs or outputs of a server event. Gradio 6.31's
   page asks every ImageEditor that ever was one for its value again at each later status update of any event, and
   an editor answers by uploading its pictures anew: a 5-shot Run spent most of its time re-sending pictures. So Run
   first copies the editors, in the browser, into hidden twins that the server reads.
5. fix_mcp_tools: the MCP tool `segment` could not take files. Gradio copies each input's JSON schema, `$defs` and
   all, into the tool's inputSchema.properties[name], so the list inputs' '#/$defs/FileData' points nowhere and the
   MCP server's validation fails (PointerToNowhere); and it records a list's files at [name, "items"], a path its
   converter never matches, so list items never became files. Also: a URL on a private or loopback address is
   refused by Gradio's download guard during preprocessing, and the client read only "The upstream Gradio app has
   raised an exception"; it now reads why, and what to send instead.
"""
import functools
import hashlib
import io
import ipaddress
import os
import tempfile
from urllib.parse import urlparse

import gradio as gr
import numpy as np
from gradio import processing_utils
from gradio.data_classes import FileData
from gradio.mcp import GradioMCPServer
from gradio.utils import get_upload_folder
from PIL import Image

GRADIO_VERSION = "6.31.0"  # the version these workarounds were written for and tested with


def receive_files(component):
    """Make a gr.Image or gr.ImageEditor hand the handler paths to the files as sent, undecoded: decoding with
    `fss_demo.images` in the handler gives one answer however an image arrives, and a message naming the slot when
    it cannot. (Set on the instance: Gradio writes a .pyi file next to any module that subclasses a component.)"""
    if isinstance(component, gr.ImageEditor):  # called for the background and each painted layer
        def as_path(file, flatten_on_white=False):
            if file is None:
                return None
            if isinstance(file, FileData):
                return file.path
            # bytes: the browser sends its canvas (a PNG) through the editor's own upload route
            return processing_utils.save_bytes_to_cache(file, "canvas.png", component.GRADIO_CACHE)

        component.convert_and_format_image = as_path
    else:
        component.preprocess = lambda payload: None if payload is None else payload.path
    return component


def picture_file(picture, name="picture.jpg"):
    """A picture (H, W, 3), or a mask (H, W), as a file in Gradio's cache, named by its content and written once,
    whole; JPEG or PNG by `name`. JPEG for the photos: encoded in a small fraction of the time of PNG or WebP
    (Gradio's default). PNG for masks and downloads: they must stay exact."""
    buffer = io.BytesIO()
    if name.endswith(".png"):
        Image.fromarray(picture).save(buffer, "PNG", compress_level=3)  # level 6 is twice as slow, 3% smaller
    else:
        Image.fromarray(picture).save(buffer, "JPEG", quality=90)
    folder = os.path.join(get_upload_folder(), hashlib.sha256(buffer.getvalue()).hexdigest())
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as staging:
            staging.write(buffer.getvalue())
        os.replace(staging.name, path)
    return path


def as_files(value):
    """A panel's value with every picture in it (in galleries' (picture, caption) pairs too) as a JPEG file."""
    if isinstance(value, np.ndarray):
        return picture_file(value)
    if isinstance(value, (list, tuple)):
        return type(value)(as_files(item) for item in value)
    return value


def cached_copy(path):
    """A bundled file copied into Gradio's upload folder: the browser can fetch it there, and send it back as an
    input (Gradio takes in only files from that folder)."""
    return processing_utils.save_file_to_cache(path, get_upload_folder())


def as_file_data(value):
    """File paths (in editor values too) as the FileData that the browser's components take; browser.js's withUrls
    adds the URL."""
    if isinstance(value, dict):
        return {key: as_file_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_file_data(item) for item in value]
    if isinstance(value, str):
        return {"path": value, "orig_name": os.path.basename(value), "meta": {"_type": "gradio.FileData"}}
    return value


# ---------------------------------------------------------------------------------------------------------------
# 5. The MCP tool's files

MCP_FILE_FORMAT = "Gradio File Input"  # how Gradio marks an input that takes a file as a URL string


def self_contained(schema):
    """The tool's input schema without nested `$defs`: a node already turned into a file URL string loses the
    `$ref` to the FileData object it replaced; any other definitions move to the root, where '#/$defs/...' looks."""
    definitions, references = {}, []

    def walk(node):
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        definitions.update(node.get("$defs", {}))
        node = {key: walk(value) for key, value in node.items() if key != "$defs"}
        if "$ref" in node and str(node.get("format", "")).startswith(MCP_FILE_FORMAT):
            del node["$ref"]
        references.extend([node["$ref"]] if "$ref" in node else [])
        return node

    schema = walk(schema)
    if references:
        schema["$defs"] = {key: walk(value) for key, value in definitions.items()}
    return schema


def file_positions(value, positions):
    """Gradio's file positions ([name, "items"] for a list) as the exact paths its converter matches: [name, 0], ...
    Positions that lead nowhere in `value` (Gradio also lists [name, "$defs", "FileData"]) are left out."""
    expanded = []

    def expand(path, node, done):
        if not path:
            expanded.append(done)
        elif path[0] == "items" and isinstance(node, list):
            for index, item in enumerate(node):
                expand(path[1:], item, done + [index])
        elif isinstance(node, dict) and path[0] in node:
            expand(path[1:], node[path[0]], done + [path[0]])

    for position in positions:
        expand(list(position), value, [])
    return expanded


def refuse_unfetchable_urls(value, positions):
    """A file URL on a private or loopback address is refused by Gradio's download guard after this point, with a
    message the MCP client never sees; say it here, where it does (an error raised here is the tool error's text)."""
    for position in positions:
        url = value
        for key in position:
            url = url[key]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            continue
        host = (urlparse(url).hostname or "").lower()
        try:
            private = not processing_utils.is_public_ip(str(ipaddress.ip_address(host)))
        except ValueError:  # a name, not an address
            private = host == "localhost" or host.endswith(".localhost")
        if private:
            raise ValueError(f"{position[0]}: the app cannot fetch {url} (a private or loopback address); send the "
                             "file as a data: URL (data:image/png;base64,...) or as a public http(s) URL.")


def fix_mcp_tools():
    """Item 5: patch Gradio's MCP server (the class: every app in this process) once."""
    get_input_schema = GradioMCPServer.get_input_schema
    convert = GradioMCPServer.convert_strings_to_filedata
    if getattr(get_input_schema, "fixed_by_fss_demo", False):
        return

    @functools.wraps(get_input_schema)
    def fixed_schema(self, tool_name, parameters=None):
        schema, positions = get_input_schema(self, tool_name, parameters)
        return self_contained(schema), positions

    @functools.wraps(convert)
    def fixed_convert(self, value, positions):
        positions = file_positions(value, positions)
        refuse_unfetchable_urls(value, positions)
        return convert(self, value, positions)

    fixed_schema.fixed_by_fss_demo = True
    GradioMCPServer.get_input_schema = fixed_schema
    GradioMCPServer.convert_strings_to_filedata = fixed_convert
