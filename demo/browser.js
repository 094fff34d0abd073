// The page's events that run in the browser (demo/gradio_fixes.py, items 3 and 4, says why they do): loading an
// example, adding a support slot, clearing, and Run's copy of the editors into their hidden twins. Gradio runs this
// function once when the page loads (launch(js=...)); each event's js= calls one of these.
() => {
  const update = (fields) => ({__type__: "update", ...fields});
  const addButton = (shown, slots) => shown === slots
    ? update({value: `${slots} supports is the most this demo takes`, interactive: false})
    : update({value: "Add a support", interactive: true});

  // Image editors (by element id) whose last chosen file the browser could not decode: the editor drops such a file
  // and would send no photo at all ("has a mask but no image"); Run sends the file itself, so the server can say
  // what it is. Forgotten when a file decodes, when the editor's own Clear canvas is pressed (forget), or when the
  // page is cleared or an example loaded.
  const unreadable = {};
  document.addEventListener("change", async (event) => {
    const input = event.target;
    const editor = input.type === "file" && input.files.length && input.closest(".photo-editor");
    if (!editor) return;
    const file = input.files[0];
    try {
      (await createImageBitmap(file)).close();
      delete unreadable[editor.id];
    } catch {
      unreadable[editor.id] = file;
    }
  }, true);

  window.fssDemo = {
    // The editor's Clear canvas (its clear event): the person took the file away, so Run must not send it.
    forget(id) {
      delete unreadable[id];
    },

    // FileData (as_file_data) with the address the browser fetches it from
    withUrls(value) {
      const root = window.gradio_config.root.replace(/\/+$/, "");
      const walk = (v) => Array.isArray(v) ? v.map(walk) : (v && typeof v === "object")
        ? (v.meta && v.meta._type === "gradio.FileData"
           ? {...v, url: `${root}/gradio_api/file=${v.path.split("/").map(encodeURIComponent).join("/")}`}
           : Object.fromEntries(Object.entries(v).map(([key, item]) => [key, walk(item)])))
        : v;
      return walk(value);
    },

    // Outputs [...values' components, ...support columns, column count, "Add a support"]: puts in `values` and
    // shows `shown` support columns. Only the columns that change are updated (an updated column makes the browser
    // re-send its editors' pictures); `undefined` leaves an output as it is.
    show(count, values, shown, slots) {
      for (const id of Object.keys(unreadable)) delete unreadable[id];
      const columns = Array.from({length: slots}, (_, i) =>
        (i < shown) === (i < count) ? undefined : update({visible: i < shown}));
      return [...this.withUrls(values), ...columns, shown, addButton(shown, slots)];
    },

    // Outputs [...support columns, column count, "Add a support"]: one more column.
    addSupport(count, slots) {
      const shown = Math.min(count + 1, slots);
      const columns = Array.from({length: slots}, (_, i) => i === shown - 1 ? update({visible: true}) : undefined);
      return [...columns, shown, shown === slots ? addButton(shown, slots) : undefined];
    },

    // Run: the editors' values (already uploaded by the browser) into their hidden twins; `ids`: the editors'
    // element ids, in the order of `values`. A file the editor could not show is uploaded here and sent as the photo.
    async copy(ids, values) {
      const root = window.gradio_config.root.replace(/\/+$/, "");
      return Promise.all(values.map(async (value, i) => {
        const file = unreadable[ids[i]];
        if (!file || (value && value.background)) return value;
        const form = new FormData();
        form.append("files", file);
        const [path] = await (await fetch(`${root}/gradio_api/upload`, {method: "POST", body: form})).json();
        return {background: {path, orig_name: file.name, meta: {_type: "gradio.FileData"}}, layers: [],
                composite: null};
      }));
    },
  };
}
