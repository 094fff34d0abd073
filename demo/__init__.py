"""The Gradio app's parts: `inputs` (the slot layout), `handlers` (what each event computes), `panels` (how an answer
is drawn), `layout` (the page and its wiring), `gradio_fixes` (every workaround for Gradio 6.31), `browser.js` (the
page's events that run in the browser) and `text` (the page's words). `app.py` launches it."""
