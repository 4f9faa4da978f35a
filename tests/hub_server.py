"""A small in-memory Hugging Face Hub (WSGI) for tests: the endpoints `huggingface_hub` really calls, over HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
REV = r"(?P<rev>[^/]+)"
# Model repos are stored under their id ("user/name"), dataset repos under "datasets/user/name".
KIND = r"(?P<kind>models|datasets)"


def git_blob_sha(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str
    parent: str | None


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def add_commit(self, branch: str, files: dict[str, bytes], message: str) -> Commit:
        parent = self.branches.get(branch)
        payload = f"{parent}\n{message}\n{time.time_ns()}\n{sorted(files)}".encode()
        commit = Commit(hashlib.sha1(payload).hexdigest(), files, message, parent)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid  # the one assignment that publishes a commit: atomic
        return commit


class HttpError(Exception):
    def __init__(self, status: str, message: str, error_code: str | None = None, headers: dict | None = None, **body):
        super().__init__(message)
        self.status, self.error_code, self.headers, self.body = status, error_code, headers or {}, body


class HubApp:
    """The WSGI application: repos, branches and commits live in memory; each commit applies all its files or none."""

    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens
        self.repos: dict[str, Repo] = {}
        self.fail_next_commit = False
        self.lock = threading.Lock()
        self.base_url = ""
        self.routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", rf"/api/{KIND}/{REPO}/preupload/{REV}", self.preupload),
            ("POST", rf"/api/{KIND}/{REPO}/commit/{REV}", self.commit),
            ("POST", rf"/api/{KIND}/{REPO}/branch/{REV}", self.create_branch),
            ("GET", rf"/api/{KIND}/{REPO}(?:/revision/{REV})?", self.repo_info),
            ("GET", rf"/api/{KIND}/{REPO}/tree/{REV}(?:/(?P<path>.+))?", self.tree),
            ("GET|HEAD", rf"/(?:(?P<kind>datasets)/)?{REPO}/resolve/{REV}/(?P<path>.+)", self.resolve),
        ]

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        try:
            for methods, pattern, handler in self.routes:
                match = re.fullmatch(pattern, path)
                if match and method in methods.split("|"):
                    kwargs = match.groupdict()
                    if kwargs.pop("kind", None) == "datasets":
                        kwargs["repo"] = f"datasets/{kwargs['repo']}"
                    with self.lock:
                        status, headers, body = handler(environ, **kwargs)
                    break
            else:
                raise HttpError("404 Not Found", f"No route for {method} {path}")
        except HttpError as error:
            status, body = error.status, json.dumps({"error": str(error), **error.body}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": str(error), **error.headers}
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
        headers.setdefault("Content-Length", str(len(body)))
        start_response(status, list(headers.items()))
        return [b""] if method == "HEAD" else [body]

    # -- helpers ----------------------------------------------------------------------------------------------------

    def user(self, environ) -> str | None:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        return self.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    def repo(self, environ, repo_id: str, write: bool = False) -> Repo:
        repo, user = self.repos.get(repo_id), self.user(environ)
        if repo is None or (repo.private and user is None):
            raise HttpError("404 Not Found", f"Repository {repo_id} not found", "RepoNotFound")
        if write and user != repo_id.removeprefix("datasets/").split("/")[0]:
            raise HttpError("403 Forbidden", f"You don't have the rights to write to {repo_id}")
        return repo

    def commit_of(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HttpError("404 Not Found", f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    @staticmethod
    def json(payload, status: str = "200 OK"):
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    @staticmethod
    def body(environ) -> bytes:
        return environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))

    # -- endpoints --------------------------------------------------------------------------------------------------

    def create_repo(self, environ):
        payload, user = json.loads(self.body(environ)), self.user(environ)
        if user is None:
            raise HttpError("401 Unauthorized", "Invalid credentials in Authorization header")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        if repo_id.split("/")[0] != user:
            raise HttpError("403 Forbidden", f"You don't have the rights to create a model under {repo_id}")
        repo_id = f"datasets/{repo_id}" if payload.get("type") == "dataset" else repo_id
        if repo_id in self.repos:
            raise HttpError("409 Conflict", "You already created this model repo", url=f"{self.base_url}/{repo_id}")
        repo = Repo(private=payload.get("visibility", "public") != "public" or bool(payload.get("private")))
        repo.add_commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self.repos[repo_id] = repo
        return self.json({"url": f"{self.base_url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, environ):
        content = json.loads(self.body(environ))["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            return self.json({"errors": [{"message": f"Invalid YAML: {error}"}]}, "400 Bad Request")
        if not isinstance(metadata, dict):
            return self.json({"errors": [{"message": "metadata must be a mapping"}]}, "400 Bad Request")
        return self.json({"errors": [], "warnings": []})

    def preupload(self, environ, repo: str, rev: str):
        files = self.commit_of(self.repo(environ, repo, write=True), rev).files
        requested = json.loads(self.body(environ))["files"]
        return self.json(
            {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None,
                    }
                    for f in requested
                ]
            }
        )

    def commit(self, environ, repo: str, rev: str):
        hub_repo = self.repo(environ, repo, write=True)
        head = self.commit_of(hub_repo, rev)
        if rev not in hub_repo.branches:
            raise HttpError("400 Bad Request", f"Can only commit to a branch, got {rev}")
        lines = [json.loads(line) for line in self.body(environ).splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if header.get("parentCommit") not in (None, head.oid):
            raise HttpError("412 Precondition Failed", f"Parent commit {header['parentCommit']} is not the head")
        files = dict(head.files)  # operations are applied to a copy; the branch moves only once all succeeded
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HttpError("404 Not Found", "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {path: content for path, content in files.items() if not path.startswith(prefix)}
            elif key != "header":
                raise HttpError("400 Bad Request", f"Unsupported commit operation {key!r} (this Hub has no LFS)")
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise HttpError("500 Internal Server Error", "Simulated failure while committing")
        new = hub_repo.add_commit(rev, files, header["summary"])
        return self.json(
            {"success": True, "commitOid": new.oid, "commitUrl": f"{self.base_url}/{repo}/commit/{new.oid}"}
        )

    def create_branch(self, environ, repo: str, rev: str):
        hub_repo = self.repo(environ, repo, write=True)
        payload = json.loads(self.body(environ) or b"{}")
        if rev in hub_repo.branches:
            raise HttpError("409 Conflict", f"Reference refs/heads/{rev} already exists")
        hub_repo.branches[rev] = self.commit_of(hub_repo, payload.get("startingPoint") or "main").oid
        return self.json({})

    def repo_info(self, environ, repo: str, rev: str | None = None):
        hub_repo = self.repo(environ, repo)
        commit = self.commit_of(hub_repo, rev or "main")
        siblings = [{"rfilename": path, "size": len(content)} for path, content in sorted(commit.files.items())]
        return self.json({"id": repo, "sha": commit.oid, "private": hub_repo.private, "siblings": siblings})

    def tree(self, environ, repo: str, rev: str, path: str | None = None):
        commit = self.commit_of(self.repo(environ, repo), rev)
        recursive = parse_qs(environ.get("QUERY_STRING", "")).get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{path.rstrip('/')}/" if path else ""
        entries, folders = [], set()
        for file_path, content in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": file_path, "oid": git_blob_sha(content), "size": len(content)})
        if path and not entries and not folders:
            raise HttpError("404 Not Found", f"{path} does not exist on {rev}", "EntryNotFound")
        folders = {f for f in folders if recursive or "/" not in f[len(prefix) :]}
        entries += [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in folders]
        return self.json(entries)

    def resolve(self, environ, repo: str, rev: str, path: str):
        commit = self.commit_of(self.repo(environ, repo), rev)
        if path not in commit.files:
            raise HttpError("404 Not Found", "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        content = commit.files[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(content)),
            "ETag": f'"{git_blob_sha(content)}"',
            "X-Repo-Commit": commit.oid,
        }
        return "200 OK", headers, content


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class HubServer:
    r"""
    A local Hub on 127.0.0.1 (a free port) in a background thread; `app` holds its state (`repos`, `fail_next_commit`).

    Example:

    ```py
    >>> with HubServer(tokens={"hf_test": "user"}) as hub:  # doctest: +SKIP
    ...     HfApi(endpoint=hub.url, token="hf_test").create_repo("user/model")
    ```
    """

    def __init__(self, tokens: dict[str, str]):
        self.app = HubApp(tokens)
        self.server = make_server("127.0.0.1", 0, self.app, ThreadingWSGIServer, handler_class=QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.app.base_url = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
