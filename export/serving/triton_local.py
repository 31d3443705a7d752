"""A real Triton Inference Server on this machine, for tests and benchmarks of a bundle's Triton models.

The ``nvidia-pytriton`` wheel on PyPI ships a ``tritonserver`` binary (Triton 2.51) with the python
backend and its stubs, but no ONNX Runtime backend. So the bundle's python-backend models (the
text model, and the ensemble's tokenize / postprocess steps) run here in the real server; the
ONNX Runtime-backend model and the ensemble itself need a Triton build with that backend (the
NGC containers have it).

Two things the wheel's server needs, both prepared once into the cache (``$DISTILPRUNE_CACHE``):

- the server itself: the wheel (pinned version, sha256 checked) with ``pytriton/tritonserver/`` and
  its shared libraries extracted; the Python stub for this interpreter's version is put where the
  python backend looks for it;
- a Python environment for the stub: its Triton 2.51 stub is built against numpy 1.x (with numpy 2
  it misreads string tensors), so the models' imports (numpy 1.26, onnxruntime, tokenizers) are
  installed apart with ``pip install --target`` and given to the server in PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

from distilprune import assets
from distilprune.errors import AssetError

PYTRITON = assets.WheelAsset(
    name="tritonserver", kind="tool", package="nvidia-pytriton", version="0.7.0",
    sha256="21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df",
    path="pytriton/tritonserver/", license="Apache-2.0 (NVIDIA PyTriton, Triton Inference Server 2.51)",
    description="tritonserver binary with the python backend (CPU; no ONNX Runtime backend)",
)
SERVER_LIBS = "nvidia_pytriton.libs/"
# What the bundle's python models import, for the stub's interpreter (numpy 1.x: see the module docstring).
STUB_PACKAGES = ("numpy==1.26.4", "onnxruntime==1.31.1", "tokenizers==0.23.3", "flatbuffers==25.12.19",
                 "packaging==26.3", "protobuf==7.36.2")


def _extract_server(wheel: Path, destination: Path) -> None:
    """Extract the server and its libraries with their file modes (zipfile drops the executable bit)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if info.filename.startswith((PYTRITON.path, SERVER_LIBS)) and not info.is_dir():
                    target = Path(archive.extract(info, staging))
                    mode = info.external_attr >> 16
                    os.chmod(target, mode & 0o777 if mode else 0o644)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        root = staging / PYTRITON.path
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise AssetError(f"{PYTRITON.package}=={PYTRITON.version} has no python backend stub for Python {version}; "
                             f"run the Triton tests with a Python it supports (3.8 to 3.13).")
        shutil.copy2(stub, root / "backends" / "python" / stub.name)
        (staging / ".complete").write_text(PYTRITON.sha256)
        staging.replace(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def fetch_server() -> Path:
    """The extracted server's root (``bin/tritonserver``, ``backends/``), downloading it on first use."""
    destination = assets.cache_root() / "tools" / f"tritonserver-{PYTRITON.package}-{PYTRITON.version}-py{sys.version_info.minor}"
    marker = destination / ".complete"
    if not (marker.is_file() and marker.read_text() == PYTRITON.sha256):
        wheel_dir = assets.cache_root() / "wheels"
        existing = sorted(wheel_dir.glob(f"{PYTRITON.package.replace('-', '_')}-{PYTRITON.version}-*.whl"))
        wheel = existing[0] if existing else assets._download_wheel(PYTRITON, wheel_dir)
        assets.verify_wheel(PYTRITON, wheel, delete_bad=True)
        shutil.rmtree(destination, ignore_errors=True)
        destination.parent.mkdir(parents=True, exist_ok=True)
        _extract_server(wheel, destination)
    return destination / PYTRITON.path.rstrip("/")


def stub_python_env() -> Path:
    """A directory of packages for the stub's interpreter (STUB_PACKAGES), installed once."""
    key = hashlib.sha256(" ".join(STUB_PACKAGES).encode()).hexdigest()[:12]
    destination = assets.cache_root() / "tools" / f"triton-python-env-py{sys.version_info.minor}-{key}"
    if (destination / ".complete").is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--target", str(staging), *STUB_PACKAGES]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise AssetError(f"Could not install the Triton stub's packages ({', '.join(STUB_PACKAGES)}); pip said: "
                         f"{tail[0]}. This needs PyPI once; afterwards they are cached in {destination.parent}.")
    (staging / ".complete").write_text(" ".join(STUB_PACKAGES))
    staging.replace(destination)
    return destination


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalTriton:
    """``tritonserver`` on 127.0.0.1 with the given models of ``repository`` loaded (explicit model control).

    Use as a context manager; ``http_url`` / ``grpc_url`` are ``host:port`` for tritonclient.
    """

    def __init__(self, repository: Path, models: list[str], log: Path | None = None, startup_s: float = 120):
        self.repository, self.models, self.startup_s = Path(repository), list(models), startup_s
        self.log = log or Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.http_url, self.grpc_url = f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.grpc_port}"
        self.process: subprocess.Popen | None = None

    def command(self, server: Path) -> list[str]:
        loads = [f"--load-model={name}" for name in self.models]
        return [str(server / "bin" / "tritonserver"), f"--model-repository={self.repository}",
                f"--backend-directory={server / 'backends'}", "--model-control-mode=explicit", *loads,
                f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
                "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--allow-metrics=false", "--log-verbose=0"]

    def __enter__(self) -> "LocalTriton":
        server = fetch_server()
        libs = [str(server.parent.parent / SERVER_LIBS.rstrip("/")), sysconfig.get_config_var("LIBDIR") or ""]
        env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [*libs, os.environ.get("LD_LIBRARY_PATH")])),
               "PYTHONPATH": str(stub_python_env())}
        with self.log.open("w") as handle:
            self.process = subprocess.Popen(self.command(server), stdout=handle, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode} before it was ready; its log "
                                   f"({self.log}) ends: {self.log.read_text()[-1500:]}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.__exit__(None, None, None)
        raise RuntimeError(f"tritonserver was not ready after {self.startup_s:.0f} s; see {self.log}.")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
