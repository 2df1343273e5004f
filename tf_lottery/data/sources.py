"""Is a dataset prepared, or can TFDS fetch it? Answered in seconds, before anything is downloaded.

TFDS, asked to download a dataset it cannot reach, retries for minutes behind
progress bars, then fails with a multi-line error and leaves temporary folders
in the data directory. Here a dataset that is not prepared is checked first:

* archives already on disk (a file named as TFDS's checksums list names it in
  `<data_dir>/downloads/manual/`, or a finished download in TFDS's cache) let
  TFDS prepare it without network;
* otherwise each host of its download URLs (or the proxy TFDS would use for it)
  must accept a TCP connection within PROBE_TIMEOUT seconds; a host that does
  not resolve answers at once.

A dataset that can be neither prepared nor downloaded is one line naming it,
where it was looked for and the fixes (a DataError, exit 2). With
TF_LOTTERY_OFFLINE=1 the network counts as unreachable without a probe; with
`--nodownload` nothing is probed either. A download that starts and fails is
cleaned up: nothing it created stays under the data directory.
"""

import dataclasses
import os
import shutil
import socket
import threading
import time
import urllib.parse
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

from tf_lottery.errors import UsageError

OFFLINE_ENV = "TF_LOTTERY_OFFLINE"
PROBE_TIMEOUT = 5.0  # seconds for all hosts together (they are probed in parallel)
DEFAULT_DATA_DIR = "~/tensorflow_datasets"
MANUAL_DIR = os.path.join("downloads", "manual")  # TFDS's default manual_dir under a data dir

# How to prepare a dataset offline where one archive is all it takes ({root}: the data dir). TFDS finds
# the archive in <data dir>/downloads/manual/ by the file name its checksums list gives, checks its
# sha256 and prepares the dataset from it; `tfds build --manual_dir` passes the same folder (the tfds
# command of TFDS 4.9.10 starts only where apache-beam is installed).
_ARCHIVE_RECIPE = ("download {url} ({what}) elsewhere, put it in {{root}}/downloads/manual/ and run again "
                   "(tf_lottery prepares it there without network; or: tfds build {name} --data_dir={{root}} "
                   "--manual_dir=<the archive's folder>, with apache-beam installed)")
OFFLINE_RECIPES = {
    "cifar10": _ARCHIVE_RECIPE.format(url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                                      what="the binary version, 162 MiB", name="cifar10"),
    "cifar100": _ARCHIVE_RECIPE.format(url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                                       what="the binary version, 161 MiB", name="cifar100"),
}


class DataError(UsageError):
    """A dataset that cannot be found, prepared or used; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Availability:
    """Where a dataset stands: 'prepared', 'local' (archives on disk), 'downloadable', 'unavailable'
    (or 'mock': tfds.testing.mock_data stands in for it)."""

    name: str
    state: str
    root: str  # the data dir it is (or would be) prepared under
    detail: str  # for 'unavailable': the one-line error; otherwise what the dry run says

    @property
    def ok(self) -> bool:
        return self.state != "unavailable"

    def line(self) -> str:
        return f"data: {self.detail}" if self.ok else f"data: unavailable; a run would stop with: {self.detail}"

    def require(self):
        if not self.ok:
            raise DataError(self.detail)


def data_dir(given: Optional[str]) -> Optional[str]:
    """--data_dir, else $TFDS_DATA_DIR, else None (TFDS's default folders)."""
    return given or os.environ.get("TFDS_DATA_DIR") or None


def looked_in(given: Optional[str]) -> List[str]:
    """The folders TFDS searches for a prepared dataset."""
    chosen = data_dir(given)
    if chosen:
        return [os.path.expanduser(chosen)]
    try:
        from tensorflow_datasets.core.utils import file_utils  # pylint: disable=import-outside-toplevel

        return [os.fspath(d) for d in file_utils.list_data_dirs()] or [os.path.expanduser(DEFAULT_DATA_DIR)]
    except Exception:  # pylint: disable=broad-except  (a TFDS without that helper)
        return [os.path.expanduser(DEFAULT_DATA_DIR)]


def offline_forced() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def is_prepared(builder) -> bool:
    return bool(builder.info.splits) and all(s in builder.info.splits for s in ("train", "test"))


def is_mocked() -> bool:
    """tfds.testing.mock_data replaces download_and_prepare with a no-op: nothing to fetch or check."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    return "mocking" in getattr(tfds.core.DatasetBuilder.download_and_prepare, "__module__", "")


def url_infos(builder) -> Dict[str, object]:
    try:
        return dict(type(builder).url_infos or {})
    except Exception:  # pylint: disable=broad-except  (an unreadable checksums file: no URLs known)
        return {}


def _local_copy(builder, url: str, info) -> Optional[str]:
    """An archive TFDS would use instead of downloading `url`: in the manual dir or its download cache."""
    root = os.fspath(builder.data_dir_root)
    filename = getattr(info, "filename", None)
    if filename and os.path.exists(os.path.join(root, MANUAL_DIR, filename)):
        return os.path.join(root, MANUAL_DIR, filename)
    try:
        from tensorflow_datasets.core.download import resource as resource_lib  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    relative = resource_lib.Resource(url=url).relative_download_dir
    for folder in (os.path.join(root, "downloads", builder.name), os.path.join(root, "downloads")):
        for checksum in (getattr(info, "checksum", None), None):
            path = os.path.join(folder, relative, resource_lib.get_dl_fname(url, checksum))
            if os.path.exists(path) and os.path.exists(path + ".INFO"):
                return path
    return None


def _proxy_for(url: str) -> Optional[str]:
    """The proxy TFDS's requests session would use for `url` (from the environment), if any."""
    try:
        import requests  # pylint: disable=import-outside-toplevel

        proxies = requests.utils.get_environ_proxies(url)
    except Exception:  # pylint: disable=broad-except
        host = urllib.parse.urlsplit(url).hostname or ""
        proxies = {} if urllib.request.proxy_bypass(host) else urllib.request.getproxies()
    scheme = urllib.parse.urlsplit(url).scheme
    return proxies.get(scheme) or proxies.get("all")


def endpoints(urls: Sequence[str]) -> List[Tuple[str, int]]:
    """(host, port) to connect to for each URL: its server, or the proxy the environment names."""
    found = []
    for url in urls:
        target = _proxy_for(url) or url
        parts = urllib.parse.urlsplit(target if "://" in target else f"http://{target}")
        if not parts.hostname:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if (parts.hostname, port) not in found:
            found.append((parts.hostname, port))
    return found


def _connect(host: str, port: int, timeout: float) -> Optional[str]:
    """None when (host, port) accepts a TCP connection; otherwise why not, in a few words."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return "does not resolve"
    except socket.timeout:
        return f"no answer in {timeout:g} s"
    except OSError as error:
        return error.strerror or type(error).__name__


def unreachable(hosts: Sequence[Tuple[str, int]], timeout: float = PROBE_TIMEOUT) -> Dict[str, str]:
    """{host: why} for the hosts that do not accept a connection; all probed in parallel within `timeout`.

    A name lookup that hangs counts as no answer: the probing threads are daemons
    and are not waited for beyond `timeout`.
    """
    if offline_forced():
        return {host: f"{OFFLINE_ENV} is set" for host, _ in hosts}
    answers: Dict[Tuple[str, int], Optional[str]] = {}

    def probe(endpoint):
        answers[endpoint] = _connect(*endpoint, timeout)

    threads = [threading.Thread(target=probe, args=(endpoint,), daemon=True) for endpoint in hosts]
    for thread in threads:
        thread.start()
    end = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    down = {}
    for host, port in hosts:
        if (host, port) not in answers:
            down[host] = f"no answer in {timeout:g} s"
        elif answers[(host, port)] is not None:
            down[host] = answers[(host, port)]
    return down


def _fixes(name: str, root: str, download: bool = True) -> str:
    network = "run with network access" if download else "run with --download and network access"
    fixes = (f"point --data_dir (or TFDS_DATA_DIR) at a TFDS directory where {name} is prepared, "
             f"or {network} so TFDS can download and prepare it")
    recipe = OFFLINE_RECIPES.get(name)
    return fixes + (f"; to prepare it offline, {recipe.format(root=root)}" if recipe else "")


def _where(given: Optional[str]) -> str:
    return " or ".join(looked_in(given))


def check(builder, download: bool, given_data_dir: Optional[str] = None) -> Availability:
    """Where `builder`'s dataset stands; probes the network only if it is not prepared and may be downloaded."""
    name, root = builder.name, os.fspath(builder.data_dir_root)
    version = f"{name} {builder.version}"
    if is_prepared(builder):
        splits = builder.info.splits
        sizes = ", ".join(f"{s} {splits[s].num_examples:,} {'example' if splits[s].num_examples == 1 else 'examples'}"
                          for s in ("train", "validation", "test") if s in splits)
        return Availability(name, "prepared", root, f"{version} prepared under {os.fspath(builder.data_dir)} ({sizes})")
    if is_mocked():
        return Availability(name, "mock", root, f"{version} from tfds.testing.mock_data")
    where = _where(given_data_dir)
    if not download:
        return Availability(name, "unavailable", root,
                            f"--data_dir: dataset {name} is not prepared under {where} and --nodownload forbids "
                            f"downloading it; {_fixes(name, root, download=False)}")
    infos = url_infos(builder)
    local = {url: _local_copy(builder, url, info) for url, info in infos.items()}
    if infos and all(local.values()):
        folders = sorted({os.path.dirname(p) for p in local.values()})
        return Availability(name, "local", root, f"{version} not prepared yet; TFDS prepares it under {root} from "
                                                 f"the archive(s) in {', '.join(folders)}, without network")
    missing = [url for url, path in local.items() if not path]
    hosts = endpoints(missing or [builder.info.homepage or ""])
    if not hosts:  # no URL known: TFDS is left to try (and cleaned up after if it fails)
        return Availability(name, "downloadable", root, f"{version} not prepared under {where}; TFDS will try to "
                                                        f"download it (its sources are not listed)")
    down = {} if offline_forced() else unreachable(hosts)
    if down or offline_forced():
        reasons = ("; ".join(f"{host} {why}" for host, why in down.items()) if down
                   else f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]} treats the network as unreachable")
        return Availability(name, "unavailable", root,
                            f"--data_dir: dataset {name} is not prepared under {where} and its source cannot be "
                            f"reached ({reasons}); {_fixes(name, root)}")
    size = sum(int(getattr(infos[url], "size", 0) or 0) for url in missing)
    amount = f" ({size / 2**20:,.0f} MiB)" if size else ""
    return Availability(name, "downloadable", root,
                        f"{version} not prepared under {where}; TFDS downloads it{amount} from "
                        f"{', '.join(host for host, _ in hosts)} (reachable) and prepares it under {root}")


def _tree(root: str, name: str) -> set:
    """Paths under the folders download_and_prepare writes to (the dataset's and downloads/)."""
    paths = set()
    for top in (os.path.join(root, name), os.path.join(root, "downloads")):
        for folder, dirs, files in os.walk(top):
            paths.add(folder)
            paths.update(os.path.join(folder, f) for f in dirs + files)
    return paths


def _remove_new(root: str, name: str, before: set, root_existed: bool):
    for path in sorted(_tree(root, name) - before, key=len, reverse=True):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                pass
    if not root_existed:
        try:
            os.rmdir(root)  # only if nothing else was put there
        except OSError:
            pass


def prepare(builder, download: bool, given_data_dir: Optional[str] = None):
    """Makes sure `builder`'s dataset is prepared: checks first, then lets TFDS download and prepare it.

    A failing download leaves nothing behind under the data dir; its error is one line.
    """
    status = check(builder, download, given_data_dir)
    status.require()
    if status.state == "prepared":
        return status
    if status.state == "mock":
        builder.download_and_prepare()  # mock_data's no-op
        return status
    root, name = os.fspath(builder.data_dir_root), builder.name
    root_existed = os.path.isdir(root)
    before = _tree(root, name)
    try:
        builder.download_and_prepare()
    except BaseException as error:  # a network failure comes in many types; ^C also cleans up
        _remove_new(root, name, before, root_existed)
        if not isinstance(error, Exception):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise DataError(f"--data_dir: dataset {name} is not prepared under {_where(given_data_dir)} and could not be "
                        f"downloaded ({reason}); {_fixes(name, root)}") from None
    return status


def availability(name: str, data_dir: Optional[str] = None, download: bool = True) -> str:
    """The one line a dry run prints about its dataset: 'data: mnist 3.0.1 prepared under ...', or
    'data: --data_dir: dataset cifar10 is not prepared ...' with the fixes when a run would stop there.

    Reads no data; probes the network (at most PROBE_TIMEOUT seconds) only for a dataset that is not
    prepared and may be downloaded.
    """
    from tf_lottery.data.datasets import _builder  # pylint: disable=import-outside-toplevel
    from tf_lottery.tasks import reinforcement  # pylint: disable=import-outside-toplevel

    if reinforcement.is_environment(name):
        return reinforcement.availability(name)
    return check(_builder(name, data_dir), download, data_dir).line()
