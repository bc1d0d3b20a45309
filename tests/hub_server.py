"""A local stand-in for the Hugging Face hub on 127.0.0.1: the endpoints huggingface_hub's
``snapshot_download`` / ``hf_hub_download`` call, serving model repositories from folders.

    with HubServer({"org/name": folder}) as server:   # server.endpoint = "http://127.0.0.1:PORT"
        ...                                           # HF_ENDPOINT=server.endpoint

* ``GET /api/models/{repo}/revision/{rev}``: ``{"id", "sha", "siblings": [{"rfilename"}]}``;
* ``GET /api/models/{repo}/tree/{rev}``: the recursive listing ``[{"type": "file", "oid", "size", "path"}]``;
* ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the file with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length`` (``Range: bytes=N-`` answered with 206, so interrupted downloads resume;
  ``server.drop_once["repo/file"] = N`` cuts the next download of that file after N bytes).

An unknown repo answers 404 with ``X-Error-Code: RepoNotFound``, as the hub does. Every request is
recorded in ``server.requests`` as ``(method, path, Range header or None)``. Only the loopback is served; the server stops
when the ``with`` block ends.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Repo:
    def __init__(self, folder: Path):
        self.files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        digest = hashlib.sha1()
        for name, path in self.files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha1(path.read_bytes()).digest())
        self.sha = digest.hexdigest()  # 40 hex digits, as a commit hash

    def etag(self, name: str) -> str:
        return hashlib.sha256(self.files[name].read_bytes()).hexdigest()


class HubServer:
    def __init__(self, repos: dict[str, Path]):
        self.repos = {repo: _Repo(Path(folder)) for repo, folder in repos.items()}
        self.drop_once: dict[str, int] = {}  # "repo/file" -> bytes sent before the connection drops (once)
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _json(self, data, status=200):
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _not_found(self, code: str):
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", f"{code} (vidreal test hub)")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, body: bool):
                path = unquote(urlsplit(self.path).path)
                server.requests.append((self.command, path, self.headers.get("Range")))
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo = server.repos.get("/".join(parts[2:4]))
                    if repo is None:
                        return self._not_found("RepoNotFound")
                    if parts[4] == "revision":
                        return self._json({"id": "/".join(parts[2:4]), "sha": repo.sha,
                                           "siblings": [{"rfilename": name} for name in repo.files]})
                    if parts[4] == "tree":
                        return self._json([{"type": "file", "oid": repo.etag(name)[:40], "size": p.stat().st_size,
                                            "path": name} for name, p in repo.files.items()])
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo = server.repos.get("/".join(parts[:2]))
                    if repo is None:
                        return self._not_found("RepoNotFound")
                    name = "/".join(parts[4:])
                    if name not in repo.files:
                        return self._not_found("EntryNotFound")
                    return self._file(repo, name, body)
                self._not_found("RepoNotFound")

            def _file(self, repo: _Repo, name: str, body: bool):
                data = repo.files[name].read_bytes()
                start = 0
                spec = self.headers.get("Range", "")
                if body and spec.startswith("bytes=") and spec[6:].split("-")[0].isdigit():
                    start = int(spec[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("ETag", f'"{repo.etag(name)}"')
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                drop = server.drop_once.pop(f"{'/'.join(self.path.strip('/').split('/')[:2])}/{name}", None) \
                    if body else None
                if drop is not None:  # a network failure in the middle of the file
                    self.wfile.write(data[start:start + drop])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if body:
                    self.wfile.write(data[start:])

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        return False
