"""A local stand-in for the Hugging Face Hub's file endpoint (HF_ENDPOINT), serving one saved model folder.

It answers what `hf_hub_download` asks: HEAD and GET on /<owner>/<name>/resolve/<revision>/<file>,
with the commit and ETag headers the client reads. Requests are recorded so tests can see them.
"""
import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def serve(folder, repo_id, revisions=("main", COMMIT)):
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _file(self):
            requests.append((self.command, self.path))
            prefix = f"/{repo_id}/resolve/"
            if not self.path.startswith(prefix):
                return None
            revision, _, name = self.path[len(prefix):].partition("/")
            path = os.path.join(folder, name)
            if revision not in revisions or not os.path.isfile(path):
                return None
            return path

        def _answer(self, with_body):
            path = self._file()
            if path is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if with_body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._answer(False)

        def do_GET(self):
            self._answer(True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", requests
