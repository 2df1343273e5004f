"""A dataset that is neither prepared nor reachable is one line in seconds, and leaves nothing behind.

No test here touches the network: sockets are replaced by ones that refuse (and
count their use), and the subprocess runs with TF_LOTTERY_OFFLINE=1.
"""

import io
import os
import socket
import tarfile
import time

import numpy as np
import pytest

from conftest import SHARED_TFDS, run_main, small_config, small_flags
from tf_lottery import data
from tf_lottery.data import sources
from tf_lottery.lottery import plan as plan_lib

FIXES = ("--data_dir", "prepared", "network access")


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup and connection fails as on a machine without network; `calls` counts them."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[0] if args else kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv(sources.OFFLINE_ENV, raising=False)
    return calls


def _forbidden(*args, **kwargs):
    raise AssertionError(f"the network was probed: {args}")


@pytest.fixture
def forbid_sockets(monkeypatch):
    """Any name lookup or connection fails the test."""
    monkeypatch.setattr(socket, "create_connection", _forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", _forbidden)
    monkeypatch.delenv(sources.OFFLINE_ENV, raising=False)


@pytest.fixture
def forbid_network(monkeypatch, forbid_sockets):
    """Any probe at all fails the test."""
    monkeypatch.setattr(sources, "unreachable", _forbidden)


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_unprepared_and_unreachable_is_one_line_in_seconds_naming_dataset_dir_and_fixes(tmp_path, no_network):
    data_dir = tmp_path / "tfds"
    start = time.monotonic()
    with pytest.raises(data.DataError) as error:
        data.load("mnist", str(data_dir), 5000, True)
    elapsed = time.monotonic() - start
    message = str(error.value)
    assert elapsed < 15, elapsed
    assert no_network, "the source's host was probed"
    assert "\n" not in message and error.value.exit_code == 2
    assert "dataset mnist" in message and str(data_dir) in message
    assert "storage.googleapis.com does not resolve" in message
    assert all(fix in message for fix in FIXES), message
    assert "tfds build" not in message  # the archive recipe is for the datasets that have one
    assert not data_dir.exists() or not _files(data_dir)


def test_nodownload_fails_the_same_way_without_probing(tmp_path, forbid_network):
    data_dir = tmp_path / "tfds"
    with pytest.raises(data.DataError) as error:
        data.load("fashion_mnist", str(data_dir), 5000, False)
    message = str(error.value)
    assert "\n" not in message and "dataset fashion_mnist" in message and str(data_dir) in message
    assert "--nodownload" in message and all(fix in message for fix in FIXES)
    assert not data_dir.exists()


def test_a_prepared_dataset_passes_without_probing(forbid_network):
    line = data.availability("mnist", SHARED_TFDS, True)
    assert line == (f"data: mnist 3.0.1 prepared under {SHARED_TFDS}/mnist/3.0.1 "
                    "(train 60,000 examples, test 10,000 examples)")
    assert data.load("mnist", SHARED_TFDS, 5000, True).info.train_size == 55000


def test_cifar10_message_gives_the_offline_recipe(tmp_path, forbid_network, monkeypatch):
    monkeypatch.setattr(sources, "unreachable", lambda hosts: {host: "refuses connections" for host, _ in hosts})
    with pytest.raises(data.DataError) as error:
        data.load("cifar10", str(tmp_path), 5000, True)
    message = str(error.value)
    assert "\n" not in message and "dataset cifar10" in message and all(fix in message for fix in FIXES)
    assert "its source cannot be reached (www.cs.toronto.edu refuses connections)" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in message
    assert f"put it in {tmp_path}/downloads/manual/" in message
    assert f"tfds build cifar10 --data_dir={tmp_path} --manual_dir=" in message
    assert not os.listdir(tmp_path)


def test_offline_env_answers_without_a_socket(monkeypatch, forbid_sockets):
    monkeypatch.setenv(sources.OFFLINE_ENV, "1")
    assert sources.unreachable([("example.org", 443)]) == {"example.org": "TF_LOTTERY_OFFLINE is set"}
    monkeypatch.setenv(sources.OFFLINE_ENV, "0")
    assert not sources.offline_forced()


def test_probe_tells_a_listening_port_from_a_closed_one(monkeypatch):
    monkeypatch.delenv(sources.OFFLINE_ENV, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        open_port = server.getsockname()[1]
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            closed_port = spare.getsockname()[1]  # bound, not listening: refuses
            start = time.monotonic()
            down = sources.unreachable([("127.0.0.1", open_port), ("localhost", closed_port)], timeout=2)
    assert time.monotonic() - start < 3
    assert list(down) == ["localhost"], down


def test_a_host_that_never_answers_costs_the_timeout_not_more(monkeypatch):
    monkeypatch.delenv(sources.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(sources, "_connect", lambda host, port, timeout: time.sleep(30))  # a hanging name lookup
    start = time.monotonic()
    down = sources.unreachable([("slow.example", 443), ("slower.example", 443)], timeout=0.5)
    assert time.monotonic() - start < 2
    assert down == {"slow.example": "no answer in 0.5 s", "slower.example": "no answer in 0.5 s"}


def test_probe_goes_to_the_proxy_the_environment_names(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "")
    assert sources.endpoints(["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]) == [("proxy.internal", 3128)]
    monkeypatch.delenv("HTTPS_PROXY")
    assert sources.endpoints(["https://www.cs.toronto.edu/a", "https://www.cs.toronto.edu/b",
                              "http://example.org/c"]) == [("www.cs.toronto.edu", 443), ("example.org", 80)]


def test_the_main_command_stops_with_exit_2_in_under_15_s_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.OFFLINE_ENV, "1")  # run_main passes os.environ on to the subprocess
    data_dir = tmp_path / "tfds"
    start = time.monotonic()
    result = run_main(*small_flags(tmp_path / "out"), f"--data_dir={data_dir}", timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("tf_lottery: error: --data_dir: dataset mnist is not prepared under " + str(data_dir))
    assert "TF_LOTTERY_OFFLINE=1 treats the network as unreachable" in lines[0] and all(fix in lines[0] for fix in FIXES)
    assert elapsed < 15, elapsed
    assert not (tmp_path / "out").exists() and (not data_dir.exists() or not _files(data_dir))


def test_dry_run_says_whether_the_data_is_available(tmp_path, monkeypatch, forbid_network):
    prepared = plan_lib.make_plan(small_config(tmp_path, dry_run=True, data_dir=SHARED_TFDS))
    assert prepared.data_status.startswith("data: mnist 3.0.1 prepared under")
    assert plan_lib.format_plan(prepared, small_config(tmp_path)).splitlines()[-1] == prepared.data_status
    monkeypatch.setattr(sources, "unreachable", lambda hosts: {host: "refuses connections" for host, _ in hosts})
    missing = plan_lib.make_plan(small_config(tmp_path, dry_run=True, data_dir=str(tmp_path / "empty")))
    assert missing.data_status.startswith("data: unavailable; a run would stop with: --data_dir: dataset mnist")
    assert plan_lib.make_plan(small_config(tmp_path, data_dir=str(tmp_path / "empty"))).data_status == ""
    assert not (tmp_path / "empty").exists()


CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def _tiny_cifar_archive(path, per_file=6, seed=0):
    """cifar-10-binary.tar.gz's layout with `per_file` records in each batch file."""
    rng = np.random.default_rng(seed)
    names = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
             "test_batch.bin"]
    members = {"batches.meta.txt": "\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                              "horse", "ship", "truck"]).encode() + b"\n"}
    for name in names:
        labels = rng.integers(0, 10, (per_file, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        members[name] = np.concatenate([labels, pixels], axis=1).tobytes()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def test_an_archive_in_downloads_manual_is_prepared_without_network(tmp_path, monkeypatch, forbid_network):
    """The offline recipe of the cifar10 message, with a tiny archive standing in for the real one."""
    from tensorflow_datasets.core.download import checksums  # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    archive = tmp_path / "downloads" / "manual" / "cifar-10-binary.tar.gz"
    _tiny_cifar_archive(str(archive))
    # Only its checksum differs from the real archive's: TFDS is told it is the registered one.
    expected = tfds.builder("cifar10", data_dir=str(tmp_path)).url_infos[CIFAR_URL]
    monkeypatch.setattr(checksums, "compute_url_info", lambda path, **_: expected)
    line = data.availability("cifar10", str(tmp_path), True)
    assert line.startswith("data: cifar10 3.0.2 not prepared yet; TFDS prepares it under") and "without network" in line
    splits = data.load("cifar10", str(tmp_path), 6, True)
    assert (splits.info.train_size, splits.info.validation_size, splits.info.test_size) == (24, 6, 6)
    assert splits.info.input_shape == (32, 32, 3)
    assert data.availability("cifar10", str(tmp_path), False).startswith("data: cifar10 3.0.2 prepared under")
    data.load.cache_clear()  # no later test may get these random images for cifar10


def test_a_download_that_fails_leaves_only_what_was_there(tmp_path, monkeypatch, forbid_network):
    archive = tmp_path / "downloads" / "manual" / "cifar-10-binary.tar.gz"
    _tiny_cifar_archive(str(archive))  # the wrong checksum: TFDS starts, then fails
    with pytest.raises(data.DataError) as error:
        data.load("cifar10", str(tmp_path), 6, True)
    assert "\n" not in str(error.value) and "could not be downloaded (Artifact" in str(error.value)
    assert _files(tmp_path) == ["downloads/manual/cifar-10-binary.tar.gz"]
    assert sorted(os.listdir(tmp_path)) == ["downloads"] and os.listdir(tmp_path / "downloads") == ["manual"]
