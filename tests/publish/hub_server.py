"""A stand-in for the parts of the Hugging Face Hub HTTP API that ``create_repo``,
``create_branch`` and ``create_commit`` call, on 127.0.0.1 (started and stopped by the
tests). Every file is answered ``uploadMode: regular``, so its bytes travel inside the
commit payload (the hub decides the mode; LFS/Xet uploads are not part of this stand-in).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "hf_test_token"
REPO_PATH = re.compile(
    r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)$"
)


@dataclass
class Repo:
    type: str
    private: bool
    branches: set[str] = field(default_factory=lambda: {"main"})
    #: one entry per commit: (branch, summary, {path: bytes})
    commits: list[tuple[str, str, dict[str, bytes]]] = field(default_factory=list)


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hub.lock:
                    hub.calls.append(self.path.split("?")[0])
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        status, reply = (
                            401,
                            {"error": "Invalid credentials in Authorization header"},
                        )
                    else:
                        status, reply = hub.handle(self.path.split("?")[0], body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def handle(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if path == "/api/repos/create":
            request = json.loads(body)
            repo_type = request.get("type") or "model"
            repo_id = f"{request['organization']}/{request['name']}"
            if (repo_type, repo_id) in self.repos:
                return 409, {"error": "You already created this model repo", "url": ""}
            self.repos[(repo_type, repo_id)] = Repo(
                repo_type, request.get("visibility") == "private" or bool(request.get("private"))
            )
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return 200, {"url": f"{self.endpoint}/{prefix}{repo_id}"}
        match = REPO_PATH.match(path)
        if match is None:
            return 404, {"error": f"no route {path}"}
        plural, repo_id, action, revision = match.groups()
        repo = self.repos.get((plural.removesuffix("s"), repo_id))
        if repo is None:
            return 404, {"error": "Repository not found"}
        if action == "branch":
            if revision in repo.branches:
                return 409, {"error": "Reference already exists"}
            repo.branches.add(revision)
            return 200, {}
        if revision not in repo.branches:
            return 404, {"error": f"Invalid rev id: {revision}"}
        if action == "preupload":
            files = json.loads(body)["files"]
            return 200, {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                    for f in files
                ]
            }
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files = {
            line["value"]["path"]: base64.b64decode(line["value"]["content"])
            for line in lines
            if line["key"] == "file"
        }
        repo.commits.append((revision, header["summary"], files))
        oid = f"{len(repo.commits):040x}"
        return 200, {
            "commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
        }


@contextmanager
def hub_server() -> Iterator[HubServer]:
    server = HubServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)
