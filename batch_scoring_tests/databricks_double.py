"""A local stand-in for the Databricks REST endpoints that dagster-databricks' Pipes clients call.

It answers Jobs `runs/submit`, `runs/get`, `runs/cancel`, DBFS `mkdirs`, `put`, `get-status`, `read`,
`delete` and the Files API (`fs/files`, `fs/directories`: Unity Catalog volumes) in the shapes of the
recorded examples in `databricks_contract/` (taken from the Databricks REST API reference), and refuses
requests with fields those examples do not have. A submitted `python_wheel_task` really runs, on the
compute its task names:
- `new_cluster`: a new job cluster for the run (counted in `clusters_started`), the task's wheel library
  installed into the run's own folder, the cluster's `spark_env_vars` in its environment;
- `existing_cluster_id`: one of the double's running all-purpose clusters, whose libraries stay installed
  from run to run;
- `environment_key`: serverless compute with the run's `environments` entry's dependencies installed.
The entry point is looked up in the wheel's metadata and started with the task's parameters, DBFS and
volumes mounted from local folders (BATCH_SCORING_WORKSPACE_MOUNT, as /dbfs and /Volumes on a driver).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
import threading
from configparser import ConfigParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

CONTRACT_DIR = Path(__file__).parent / "databricks_contract"
MAX_PUT_BYTES = 1024 * 1024  # DBFS put takes at most 1 MB of contents
ABSENT_ON_CLUSTER = ("dagster", "dagster_databricks", "dagster_webserver", "dagster_pyspark")
ANY_KEY = "*"  # in a recorded example: a free-form map, any key allowed


def load_contract() -> dict[str, dict]:
    """The recorded request/response examples, by endpoint ("POST /api/2.2/jobs/runs/submit")."""
    examples = [json.loads(path.read_text()) for path in sorted(CONTRACT_DIR.glob("*.json"))]
    return {example["endpoint"]: example for example in examples}


def shape_errors(actual: object, example: object, where: str = "") -> list[str]:
    """Where `actual` departs from the recorded example: fields it lacks, or values of another type."""
    if isinstance(example, dict):
        if not isinstance(actual, dict):
            return [f"{where or 'body'}: expected an object, got {type(actual).__name__}"]
        errors = []
        for key, value in actual.items():
            if key in example or ANY_KEY in example:
                errors += shape_errors(value, example.get(key, example.get(ANY_KEY)), f"{where}.{key}")
            else:
                errors.append(f"{where}.{key}: not a field of the API")
        return errors
    if isinstance(example, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list"]
        return [error for i, item in enumerate(actual) for error in shape_errors(item, example[0], f"{where}[{i}]")]
    if isinstance(example, bool) or isinstance(actual, bool):
        return [] if isinstance(actual, bool) == isinstance(example, bool) else [f"{where}: expected a boolean"]
    if isinstance(example, (int, float)):
        return [] if isinstance(actual, (int, float)) else [f"{where}: expected a number"]
    return [] if isinstance(actual, type(example)) else [f"{where}: expected {type(example).__name__}"]


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


class TaskRun:
    """One submitted run: the process of its task, and its state as runs/get reports it."""

    def __init__(self, run_id: int, request: dict, process: subprocess.Popen | None, log: Path, error: str = ""):
        self.run_id, self.request, self.process, self.log = run_id, request, process, log
        self.cancelled = False
        self.setup_error = error

    def state(self) -> dict:
        if self.setup_error:
            return {"life_cycle_state": "INTERNAL_ERROR", "state_message": self.setup_error}
        code = self.process.poll()
        if code is None:
            return {"life_cycle_state": "RUNNING", "state_message": "In run"}
        if self.cancelled:
            return {"life_cycle_state": "TERMINATED", "result_state": "CANCELED", "state_message": "Run cancelled."}
        if code == 0:
            return {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS", "state_message": ""}
        return {
            "life_cycle_state": "TERMINATED",
            "result_state": "FAILED",
            "state_message": f"Workload failed, see run output for details (exit code {code})",
        }


class DatabricksDouble:
    """Serve on a free loopback port; `url` is the workspace host to give the client."""

    def __init__(self, root: Path, token: str, task_env: dict[str, str], running_clusters: tuple[str, ...] = ()):
        self.root = Path(root)
        self.dbfs = self.root / "dbfs"  # the DBFS root, mounted for tasks as /dbfs is on a cluster
        self.volumes = self.root / "Volumes"  # Unity Catalog volumes, mounted as /Volumes
        self.dbfs.mkdir(parents=True, exist_ok=True)
        self.volumes.mkdir(exist_ok=True)
        self.token = token
        self.task_env = task_env
        self.running_clusters = running_clusters  # ids of all-purpose clusters that are up
        self.contract = load_contract()
        self.requests: list[dict] = []  # every request: endpoint, query, body, response status
        self.runs: dict[int, TaskRun] = {}
        self.clusters_started: list[int] = []  # the runs that started a new job cluster
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> DatabricksDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        for run in self.runs.values():
            if run.process and run.process.poll() is None:
                run.process.kill()
                run.process.wait()

    def dbfs_path(self, path: str) -> Path:
        """The local file of a DBFS path ("/tmp/x" or "dbfs:/tmp/x")."""
        relative = path.removeprefix("dbfs:").lstrip("/")
        local = (self.dbfs / relative).resolve()
        if not local.is_relative_to(self.dbfs.resolve()):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Path {path} is outside DBFS")
        return local

    def volume_path(self, path: str) -> Path:
        """The local file of a Unity Catalog volume path (/Volumes/<catalog>/<schema>/<volume>/...)."""
        local = (self.root / path.lstrip("/")).resolve()
        if not path.startswith("/Volumes/") or len(Path(path).parts) < 5 or not local.is_relative_to(self.volumes):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Path {path} is not in a volume: /Volumes/<c>/<s>/<v>/...")
        return local

    def workspace_file(self, path: str) -> Path:
        return self.volume_path(path) if path.startswith("/Volumes/") else self.dbfs_path(path)

    # ---- Jobs

    def _runs_submit(self, body: dict) -> dict:
        (task,) = body["tasks"]
        with self._lock:
            run_id = 1000 + len(self.runs)
        folder = self.root / "runs" / str(run_id)
        log = folder / "driver.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            site, env = self._compute(task, body.get("environments", []), run_id, folder)
            command = self._task_command(task, site)
        except ApiError as error:
            self.runs[run_id] = TaskRun(run_id, body, None, log, error.message)
            return {"run_id": run_id}
        env = {
            **self.task_env,
            **env,
            "BATCH_SCORING_WORKSPACE_MOUNT": str(self.root),
            "PYTHONPATH": str(site),
        }
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.runs[run_id] = TaskRun(run_id, body, process, log)
        return {"run_id": run_id}

    def _compute(self, task: dict, environments: list[dict], run_id: int, folder: Path) -> tuple[Path, dict]:
        """Where the task runs: its Python packages' folder (libraries installed) and the environment it adds."""
        kinds = [key for key in ("new_cluster", "existing_cluster_id", "environment_key") if key in task]
        if len(kinds) != 1:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"A task needs one of new_cluster, existing_cluster_id, environment_key; got {kinds or 'none'}",
            )
        if kinds == ["environment_key"]:  # serverless: the environment's dependencies, for this run
            spec = next((e["spec"] for e in environments if e["environment_key"] == task["environment_key"]), None)
            if spec is None:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"No environment {task['environment_key']} in the run")
            if "libraries" in task:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "Libraries are not supported on serverless compute")
            site = folder / "site-packages"
            self._install(spec.get("dependencies", []), site)
            return site, {}
        if kinds == ["existing_cluster_id"]:
            cluster_id = task["existing_cluster_id"]
            if cluster_id not in self.running_clusters:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
            site = self.root / "clusters" / cluster_id / "site-packages"  # libraries stay on the cluster
            self._install([library["whl"] for library in task.get("libraries", [])], site)
            return site, {}
        self.clusters_started.append(run_id)
        site = folder / "site-packages"
        self._install([library["whl"] for library in task.get("libraries", [])], site)
        return site, task["new_cluster"].get("spark_env_vars", {})

    def _install(self, wheels: list[str], site: Path) -> None:
        for wheel_path in wheels:
            wheel = self.workspace_file(wheel_path)
            if not wheel.exists():
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Library {wheel_path} does not exist")
            installed = site / ".installed"
            if installed.exists() and wheel.name in installed.read_text().split():
                continue
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                check=True,
                capture_output=True,
            )
            with installed.open("a") as handle:
                handle.write(wheel.name + "\n")

    def _task_command(self, task: dict, site: Path) -> list[str]:
        """The command of the task's entry point, looked up in its installed wheel's metadata."""
        wheel_task = task.get("python_wheel_task")
        if wheel_task is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "this double runs python_wheel_task tasks only")
        entry_points = ConfigParser()
        for metadata in site.glob(f"{wheel_task['package_name']}-*.dist-info/entry_points.txt"):
            entry_points.read(metadata)
        target = entry_points.get("console_scripts", wheel_task["entry_point"], fallback=None)
        if target is None:
            raise ApiError(
                400, "INVALID_PARAMETER_VALUE", f"No entry point {wheel_task['entry_point']} in the package's wheel"
            )
        module, function = target.split(":")
        launcher = (
            # what a cluster does not have: the orchestrator-only packages the wheel does not require
            f"import sys; sys.modules.update(dict.fromkeys({ABSENT_ON_CLUSTER!r}))\n"
            f"import {module}\n"
            f"print('code from', {module}.__file__, flush=True)\n"
            f"sys.exit({module}.{function}())\n"
        )
        return [sys.executable, "-c", launcher, *wheel_task.get("parameters", [])]

    def _runs_get(self, query: dict) -> dict:
        run = self._run(int(query["run_id"]))
        response = copy.deepcopy(self.contract["GET /api/2.2/jobs/runs/get"]["response"])
        response.update(
            run_id=run.run_id,
            number_in_job=run.run_id,
            run_name=run.request.get("run_name", "Untitled"),
            run_page_url=f"{self.url}/#job/runs/{run.run_id}",
            state=run.state(),
        )
        response["tasks"][0].update(run_id=run.run_id, task_key=run.request["tasks"][0]["task_key"], state=run.state())
        return response

    def _runs_cancel(self, body: dict) -> dict:
        run = self._run(int(body["run_id"]))
        if run.process and run.process.poll() is None:
            run.cancelled = True
            os.killpg(run.process.pid, 15)
            run.process.wait()
        return {}

    def _run(self, run_id: int) -> TaskRun:
        if run_id not in self.runs:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        return self.runs[run_id]

    # ---- DBFS

    def _dbfs_mkdirs(self, body: dict) -> dict:
        self.dbfs_path(body["path"]).mkdir(parents=True, exist_ok=True)
        return {}

    def _dbfs_put(self, body: dict) -> dict:
        target = self.dbfs_path(body["path"])
        contents = base64.b64decode(body.get("contents", ""))
        if len(contents) > MAX_PUT_BYTES:
            raise ApiError(400, "MAX_BLOCK_SIZE_EXCEEDED", "The contents exceed 1 MB; use the streaming upload.")
        if target.exists() and not body.get("overwrite", False):
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"A file or directory already exists at {body['path']}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(contents)
        return {}

    def _existing(self, path: str) -> Path:
        local = self.dbfs_path(path)
        if not local.exists():
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}.")
        return local

    def _dbfs_get_status(self, query: dict) -> dict:
        local = self._existing(query["path"])
        return {
            "path": query["path"],
            "is_dir": local.is_dir(),
            "file_size": 0 if local.is_dir() else local.stat().st_size,
            "modification_time": int(local.stat().st_mtime * 1000),
        }

    def _dbfs_read(self, query: dict) -> dict:
        local = self._existing(query["path"])
        if local.is_dir():
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cannot read a directory: {query['path']}")
        offset, length = int(query.get("offset", 0)), int(query.get("length", 0)) or MAX_PUT_BYTES
        data = local.read_bytes()[offset : offset + min(length, MAX_PUT_BYTES)]
        return {"bytes_read": len(data), "data": base64.b64encode(data).decode()}

    def _dbfs_delete(self, body: dict) -> dict:
        local = self.dbfs_path(body["path"])
        if local.is_dir():
            if any(local.iterdir()) and not body.get("recursive", False):
                raise ApiError(400, "IO_ERROR", f"Directory {body['path']} is not empty; delete it recursively.")
            shutil.rmtree(local)
        else:
            local.unlink(missing_ok=True)
        return {}

    # ---- Files API (Unity Catalog volumes)

    def _existing_in_volume(self, path: str, directory: bool) -> Path:
        local = self.volume_path(path)
        if not (local.is_dir() if directory else local.is_file()):
            kind = "directory" if directory else "file"
            raise ApiError(404, "NOT_FOUND", f"The {kind} being accessed is not found: {path}")
        return local

    def _fs_file_put(self, path: str, query: dict, data: bytes) -> dict:
        local = self.volume_path(path)
        if local.exists() and query.get("overwrite") != "true":
            raise ApiError(409, "ALREADY_EXISTS", f"The file being created already exists: {path}")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return {}

    def _fs_file_get(self, path: str, query: dict, data: bytes) -> bytes:
        return self._existing_in_volume(path, directory=False).read_bytes()

    def _fs_file_delete(self, path: str, query: dict, data: bytes) -> dict:
        self._existing_in_volume(path, directory=False).unlink()
        return {}

    def _fs_directory_put(self, path: str, query: dict, data: bytes) -> dict:
        self.volume_path(path).mkdir(parents=True, exist_ok=True)
        return {}

    def _fs_directory_get(self, path: str, query: dict, data: bytes) -> dict:
        local = self._existing_in_volume(path, directory=True)
        contents = [
            {
                "path": f"{path.rstrip('/')}/{item.name}",
                "is_directory": item.is_dir(),
                **({} if item.is_dir() else {"file_size": item.stat().st_size}),
                "last_modified": int(item.stat().st_mtime * 1000),
                "name": item.name,
            }
            for item in sorted(local.iterdir())
        ]
        return {"contents": contents}

    def _fs_directory_delete(self, path: str, query: dict, data: bytes) -> dict:
        local = self._existing_in_volume(path, directory=True)
        if any(local.iterdir()):
            raise ApiError(400, "DIRECTORY_NOT_EMPTY", f"The directory being deleted is not empty: {path}")
        local.rmdir()
        return {}

    # ---- HTTP

    def _routes(self) -> dict:
        return {
            "POST /api/2.2/jobs/runs/submit": self._runs_submit,
            "GET /api/2.2/jobs/runs/get": self._runs_get,
            "POST /api/2.2/jobs/runs/cancel": self._runs_cancel,
            "POST /api/2.0/dbfs/mkdirs": self._dbfs_mkdirs,
            "POST /api/2.0/dbfs/put": self._dbfs_put,
            "GET /api/2.0/dbfs/get-status": self._dbfs_get_status,
            "GET /api/2.0/dbfs/read": self._dbfs_read,
            "POST /api/2.0/dbfs/delete": self._dbfs_delete,
        }

    def _path_routes(self) -> dict:
        """Endpoints with the file's path in the URL: `PUT /api/2.0/fs/files/Volumes/...`."""
        return {
            "PUT /api/2.0/fs/files": self._fs_file_put,
            "GET /api/2.0/fs/files": self._fs_file_get,
            "DELETE /api/2.0/fs/files": self._fs_file_delete,
            "PUT /api/2.0/fs/directories": self._fs_directory_put,
            "GET /api/2.0/fs/directories": self._fs_directory_get,
            "DELETE /api/2.0/fs/directories": self._fs_directory_delete,
        }

    def handle(self, method: str, url: str, headers: dict, data: bytes) -> tuple[int, dict | bytes]:
        parsed = urlparse(url)
        query = {key: values[0] for key, values in parse_qs(parsed.query).items()}
        url_path = unquote(parsed.path)
        prefix = next(
            (
                p
                for p in self._path_routes()
                if p.startswith(method + " ") and url_path.startswith(p.split(" ", 1)[1] + "/")
            ),
            None,
        )
        endpoint = f"{prefix}{{path}}" if prefix else f"{method} {url_path}"
        json_body = None if prefix else (json.loads(data) if data else None)
        record = {
            "endpoint": endpoint,
            "query": query,
            "body": json_body if not prefix else f"<{len(data)} bytes>",
            "authorization": headers.get("Authorization"),
        }
        try:
            if headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")
            example = self.contract.get(endpoint)
            if example is None:
                raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{endpoint}'")
            checked = query if method == "GET" or prefix else json_body or {}
            errors = shape_errors(checked, example["request"])
            if errors:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "; ".join(errors))
            if prefix:
                path = url_path.removeprefix(prefix.split(" ", 1)[1])
                status, response = 200, self._path_routes()[prefix](path, query, data)
            else:
                status, response = 200, self._routes()[endpoint](query if method == "GET" else json_body or {})
        except ApiError as error:
            status, response = error.status, {"error_code": error.error_code, "message": error.message}
        record.update(
            status=status, response=response if not isinstance(response, bytes) else f"<{len(response)} bytes>"
        )
        with self._lock:
            self.requests.append(record)
        return status, response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, response = double.handle(method, self.path, dict(self.headers), self.rfile.read(length))
                raw = isinstance(response, bytes)
                payload = response if raw else json.dumps(response).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, *args) -> None:
                pass  # the requests are kept in `double.requests`

        return Handler
