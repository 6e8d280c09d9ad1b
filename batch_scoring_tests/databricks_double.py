"""A local stand-in for the Databricks REST endpoints that dagster-databricks' PipesDatabricksClient calls.

It answers Jobs `runs/submit`, `runs/get`, `runs/cancel` and DBFS `mkdirs`, `put`, `get-status`,
`read`, `delete` in the shapes of the recorded examples in `databricks_contract/` (taken from the
Databricks REST API reference), and refuses requests with fields those examples do not have. A
submitted `python_wheel_task` really runs: the double installs the task's wheel library into a
folder of its own (as a cluster installs a library), looks the entry point up in the wheel's
metadata, and starts it with the cluster's `spark_env_vars`, DBFS mounted from a local folder.
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
from urllib.parse import parse_qs, urlparse

CONTRACT_DIR = Path(__file__).parent / "databricks_contract"
MAX_PUT_BYTES = 1024 * 1024  # DBFS put takes at most 1 MB of contents
ABSENT_ON_CLUSTER = ("dagster_databricks", "dagster_webserver", "dagster_pyspark")
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

    def __init__(self, root: Path, token: str, task_env: dict[str, str]):
        self.root = Path(root)
        self.dbfs = self.root / "dbfs"  # the DBFS root, mounted for tasks as /dbfs is on a cluster
        self.dbfs.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.task_env = task_env
        self.contract = load_contract()
        self.requests: list[dict] = []  # every request: endpoint, query, body, response status
        self.runs: dict[int, TaskRun] = {}
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

    # ---- Jobs

    def _runs_submit(self, body: dict) -> dict:
        (task,) = body["tasks"]
        with self._lock:
            run_id = 1000 + len(self.runs)
        cluster = self.root / "clusters" / str(run_id)
        log = cluster / "driver.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            command = self._task_command(task, cluster)
        except ApiError as error:
            self.runs[run_id] = TaskRun(run_id, body, None, log, error.message)
            return {"run_id": run_id}
        env = {
            **self.task_env,
            **task["new_cluster"].get("spark_env_vars", {}),
            "BATCH_SCORING_DBFS_MOUNT": str(self.dbfs),
            "PYTHONPATH": str(cluster / "site-packages"),
        }
        process = subprocess.Popen(
            command, cwd=cluster, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.runs[run_id] = TaskRun(run_id, body, process, log)
        return {"run_id": run_id}

    def _task_command(self, task: dict, cluster: Path) -> list[str]:
        """Install the task's wheel libraries into the cluster's folder; the command of its entry point."""
        wheel_task = task.get("python_wheel_task")
        if wheel_task is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "this double runs python_wheel_task tasks only")
        site = cluster / "site-packages"
        for library in task.get("libraries", []):
            wheel = self.dbfs_path(library["whl"])
            if not wheel.exists():
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Library {library['whl']} does not exist")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                check=True,
                capture_output=True,
            )
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

    def handle(self, method: str, url: str, headers: dict, body: dict | None) -> tuple[int, dict]:
        parsed = urlparse(url)
        endpoint = f"{method} {parsed.path}"
        query = {key: values[0] for key, values in parse_qs(parsed.query).items()}
        record = {"endpoint": endpoint, "query": query, "body": body, "authorization": headers.get("Authorization")}
        try:
            if headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")
            example = self.contract.get(endpoint)
            if example is None:
                raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{endpoint}'")
            errors = shape_errors(query if method == "GET" else body or {}, example["request"])
            if errors:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "; ".join(errors))
            status, response = 200, self._routes()[endpoint](query if method == "GET" else body or {})
        except ApiError as error:
            status, response = error.status, {"error_code": error.error_code, "message": error.message}
        record.update(status=status, response=response)
        with self._lock:
            self.requests.append(record)
        return status, response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else None
                status, response = double.handle(method, self.path, dict(self.headers), body)
                payload = json.dumps(response).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, *args) -> None:
                pass  # the requests are kept in `double.requests`

        return Handler
