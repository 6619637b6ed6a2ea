from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from esol.infra.config import Params, deep_merge, params_from_dict

REPO = Path(__file__).resolve().parents[1]


def smoke_params_dict() -> dict:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return deep_merge(base, yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()))


@pytest.fixture
def smoke_params() -> Params:
    return params_from_dict(smoke_params_dict())


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory):
    """The smoke synthetic dataset, generated once per test session."""
    from esol.data.layout import Dataset
    from esol.data.synthetic import generate

    params = params_from_dict(smoke_params_dict())
    root = tmp_path_factory.mktemp("smoke_data") / "dataset"
    generate(root, params.synthetic, params.dataset.seed)
    return Dataset(root)


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory):
    """A project copy on the smoke params after one full `snakemake --cores 2`, and the metrics
    of that uninterrupted run (later tests may change the project; the metrics stay)."""
    import json

    from .pipeline_project import make_project, run

    root = make_project(tmp_path_factory.mktemp("smoke") / "esol")
    run(root, "snakemake", "--cores", "2")
    reference = {
        name: json.loads((root / "results" / "metrics" / f"{name}.json").read_text())
        for name in ("seeds", "pseudo_labels", "segmentation")
    }
    return root, reference


@pytest.fixture
def file_server():
    """A local HTTP server (tests/fake_remote.py) for the download and real-dataset tests."""
    from .fake_remote import FileServer

    server = FileServer().start()
    yield server
    server.stop()


@contextlib.contextmanager
def blocked_network() -> Iterator[list]:
    """Inside: every TCP/UDP connection and name lookup fails (Unix sockets, which data-loader
    workers use, still work). Yields the list of attempts."""
    attempts: list = []
    real_connect, real_connect_ex, real_lookup = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def refuse(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network blocked by the test: {address}")
        return real_connect(self, address)

    def no_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"name lookup blocked by the test: {host}")

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = refuse, refuse, no_lookup
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = real_connect, real_connect_ex, real_lookup


@pytest.fixture
def no_network():
    """The test runs with the network blocked (:func:`blocked_network`); the fixture is the attempt list."""
    with blocked_network() as attempts:
        yield attempts
