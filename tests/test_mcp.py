"""The /segment endpoint as an MCP tool, called by a real MCP client (the `mcp` package) on the launched app: files as
data: URLs, as a client sends them to a local app (Gradio's download guard fetches no loopback URL; a Space takes
public http(s) URLs too)."""
import ast
import json
import urllib.request

import numpy as np
from PIL import Image

from .live import example


def data_url(path):
    """A file as a data: URL, as an MCP client sends files to a local app (Gradio fetches no loopback URL)."""
    import base64
    import mimetypes

    return f"data:{mimetypes.guess_type(path)[0]};base64," + base64.b64encode(open(path, "rb").read()).decode()


def mcp_session(server, work):
    """Run `work(session)` in a real MCP client session with the app's MCP server; its result."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        async with streamable_http_client(server + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)

    return asyncio.run(run())


def test_the_segment_endpoint_is_an_mcp_tool(server):
    async def list_tools(session):
        return (await session.list_tools()).tools

    tools = mcp_session(server, list_tools)
    assert [tool.name for tool in tools] == ["segment"]
    schema = tools[0].inputSchema
    assert list(schema["properties"]) == ["query", "supports", "masks", "query_mask"]
    assert "$defs" not in json.dumps(schema["properties"])  # a nested $defs is what made every call fail
    description = tools[0].description
    assert description.startswith("Segment in the query the kind of object marked in the supports")
    assert "convlstm_masks: the ConvLSTM's mask after supports 1..k" in description and ";," not in description


def test_an_mcp_client_segments_the_bundled_example(server):
    photos, masks, files = example()
    arguments = {"query": data_url(files.query), "supports": [data_url(p) for p in photos],
                 "masks": [data_url(m) for m in masks], "query_mask": data_url(files.truth)}

    async def call(session):
        return await session.call_tool("segment", arguments)

    result = mcp_session(server, call)
    assert not result.isError, result.content
    # one text: the three outputs as a Python literal, the galleries' pictures as URLs on the app
    convlstm, logical_or, numbers = ast.literal_eval(result.content[0].text)
    k = len(photos)
    assert [s["step"] for s in numbers["steps"]] == list(range(1, k + 1)) and numbers["steps"][0]["admission"] == 1.0
    assert all(0 <= s["iou"] <= 1 for s in numbers["steps"])
    assert len(convlstm) == len(logical_or) == k
    urls = [item["image"]["url"] for item in convlstm]
    final = np.asarray(Image.open(urllib.request.urlopen(urls[-1]))) > 127
    query = Image.open(files.query)
    assert final.shape == (query.height, query.width)


def test_mcp_calls_with_bad_files_get_a_sentence(server, tmp_path):
    photos, masks, files = example("good")
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    good = {"query": data_url(files.query), "supports": [data_url(photos[0])], "masks": [data_url(masks[0])]}
    cases = [({**good, "masks": []}, "masks: give one mask per support photo (1 photo(s), 0 mask(s))."),
             ({**good, "supports": ["data:image/jpeg;base64," + base64_of(text)]},
              "Support 1's image: 'file.jpg' is not an image file that can be read"),
             ({**good, "query": server + "gradio_api/file=/tmp/q.jpg"},
              f"query: the app cannot fetch {server}gradio_api/file=/tmp/q.jpg (a private or loopback address); "
              "send the file as a data: URL (data:image/png;base64,...) or as a public http(s) URL.")]

    async def call(session):
        return [await session.call_tool("segment", arguments) for arguments, _ in cases]

    for result, (_, message) in zip(mcp_session(server, call), cases):
        assert result.isError and message in result.content[0].text, result.content[0].text


def base64_of(path):
    import base64

    return base64.b64encode(open(path, "rb").read()).decode()
