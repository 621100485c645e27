"""Storage faults: the S3 endpoint going away mid-write and coming back, a read-only lake, a
full lake. Every time: one clear error line from the CLI, nothing half-written visible to
readers, and the next run recovers."""

from __future__ import annotations

import json
import os
import socket
import uuid
from contextlib import nullcontext
from pathlib import Path

import pytest

from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.demo.sample import generate_locations, to_format
from tests.reliability import proc
from tests.reliability.audit import audit_lake

MOUNT = proc.can_mount()


def write_map(path: Path, n: int, seed: int, fmt: str = "geoguessr") -> Path:
    path.write_text(json.dumps(to_format(generate_locations(n, seed=seed), fmt, name=path.stem)))
    return path


def exported(lake_uri: str, name: str, out: Path) -> object:
    done = proc.cli(["--lake", lake_uri, "export", "--map", name, "--out", str(out)])
    assert done.code == 0, done.err
    return json.loads(out.read_text())


def ok(done: proc.Finished) -> proc.Finished:
    assert done.code == 0, done.err
    return done


# ---- S3 ---------------------------------------------------------------------------------------------


@pytest.fixture
def flaky_s3(monkeypatch):
    """Our own moto server (so it can be stopped) behind a proxy that can drop it."""
    import s3fs
    from moto.server import ThreadedMotoServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = proc.FlakyProxy(port)
    proxy.up()
    direct = f"http://127.0.0.1:{port}"
    for k, v in dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                     AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}", AWS_MAX_ATTEMPTS="2").items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()  # no client left over from another endpoint
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True,
                      client_kwargs={"endpoint_url": direct}).mkdir(bucket)
    yield proxy, direct, f"s3://{bucket}/lake"
    proxy.down()
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def direct_lake(uri: str, endpoint: str):
    """The lake read straight from moto (not through the proxy): what any other reader sees."""
    return open_lake(uri, {"skip_instance_cache": True, "client_kwargs": {"endpoint_url": endpoint}})


def test_s3_endpoint_goes_away_mid_write_and_comes_back(flaky_s3, tmp_path) -> None:
    import s3fs

    proxy, direct, uri = flaky_s3
    first = write_map(tmp_path / "first.json", 40, seed=11)
    big = write_map(tmp_path / "big.json", 250, seed=12, fmt="customCoordinates")
    ok(proc.cli(["--lake", uri, "ingest", str(first)]))

    # 1. the endpoint is gone before the command starts: a clear error, quickly
    proxy.down()
    s3fs.S3FileSystem.clear_instance_cache()
    done = proc.cli(["--lake", uri, "ingest", str(big)])
    line = done.assert_clear_error()
    assert uri in line, line
    assert done.seconds < 60, f"took {done.seconds:.0f}s to give up"
    proxy.up()

    # 2. the endpoint vanishes in the middle of the PUT of the big map's locations file
    proxy.cut_put_after = 8_000
    s3fs.S3FileSystem.clear_instance_cache()
    done = proc.cli(["--lake", uri, "ingest", str(big)])
    assert proxy.cuts == 1, "the write was not interrupted"
    assert "/tables/locations/" in proxy.cut_requests[0], proxy.cut_requests  # a data file of the locations table
    done.assert_clear_error()
    reader = direct_lake(uri, direct)
    audit_lake(reader).assert_clean()
    maps = reader.query("SELECT map, location_count FROM maps ORDER BY map").to_pylist()
    assert maps == [{"map": "first", "location_count": 40}], maps  # the big map is not half there
    assert reader.query("SELECT count(*) n FROM locations").to_pylist() == [{"n": 40}]

    # 3. it comes back: the same command now succeeds, nothing duplicated or lost
    proxy.up()
    s3fs.S3FileSystem.clear_instance_cache()
    ok(proc.cli(["--lake", uri, "ingest", str(big)]))
    audit = audit_lake(direct_lake(uri, direct))
    audit.assert_clean()
    assert audit.rows["locations"] == 40 + 250
    assert exported(uri, "big", tmp_path / "big.out.json") == json.loads(big.read_text())


# ---- local folders ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not MOUNT and os.geteuid() == 0, reason="needs mount (tmpfs) as root, or a non-root user")
def test_read_only_lake_refuses_writes_but_serves_reads(tmp_path) -> None:
    first = write_map(tmp_path / "first.json", 40, seed=21)
    second = write_map(tmp_path / "second.json", 40, seed=22)
    folder = tmp_path / "ro"
    lake_dir = folder / "lake"

    def make_read_only(ro: bool) -> None:
        if MOUNT:
            proc.remount(folder, "ro" if ro else "rw")
        else:  # a non-root user: permissions are enough
            for p in [lake_dir, *lake_dir.rglob("*")]:
                p.chmod((p.stat().st_mode & ~0o222) if ro else (p.stat().st_mode | 0o200))

    with proc.tmpfs(folder, "8m") if MOUNT else nullcontext(folder):
        ok(proc.cli(["--lake", str(lake_dir), "ingest", str(first)]))
        before = sorted(str(p) for p in lake_dir.rglob("*"))
        make_read_only(True)
        try:
            line = proc.cli(["--lake", str(lake_dir), "ingest", str(second)]).assert_clear_error()
            assert str(lake_dir) in line and ("read-only" in line.lower() or "permission" in line.lower()), line
            # reading a read-only lake still works: sql and export
            q = ok(proc.cli(["--lake", str(lake_dir), "--json", "sql", "SELECT count(*) AS n FROM locations"]))
            assert json.loads(q.out) == [{"n": 40}]
            assert exported(str(lake_dir), "first", tmp_path / "first.out.json") == json.loads(first.read_text())
        finally:
            make_read_only(False)
        assert sorted(str(p) for p in lake_dir.rglob("*")) == before  # nothing half-written
        ok(proc.cli(["--lake", str(lake_dir), "ingest", str(second)]))
        audit = audit_lake(open_lake(str(lake_dir)))
        audit.assert_clean()
        assert audit.rows["locations"] == 80


def _limit_file_size(limit: int):
    def preexec() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_full_lake_fails_cleanly_and_recovers(tmp_path) -> None:
    first = write_map(tmp_path / "first.json", 40, seed=31)
    big = write_map(tmp_path / "big.json", 3000, seed=32, fmt="customCoordinates")
    folder = tmp_path / "disk"
    with proc.tmpfs(folder, "2m") if MOUNT else nullcontext(folder) as disk:
        disk.mkdir(exist_ok=True)
        lake_dir = disk / "lake"
        out = disk / "exports" / "first.json"
        ok(proc.cli(["--lake", str(lake_dir), "ingest", str(first)]))
        if MOUNT:  # a really full disk (ENOSPC), in this process
            filler = proc.fill(disk, leave_bytes=32_000)
            done = proc.cli(["--lake", str(lake_dir), "ingest", str(big)])
            out.parent.mkdir()
            filler2 = proc.fill(out.parent, leave_bytes=0)
            done_x = proc.cli(["--lake", str(lake_dir), "export", "--map", "first", "--out", str(out)])
            fillers = [filler, filler2]
        else:  # no mount: a file-size limit gives EFBIG on the big write (in a child process)
            env, limit = proc.base_env(), _limit_file_size(32_000)
            done = proc.run(["--lake", str(lake_dir), "ingest", str(big)], env, preexec=limit)
            done_x = proc.run(["--lake", str(lake_dir), "export", "--map", "first", "--out", str(out)], env,
                              preexec=_limit_file_size(100))
            fillers = []
        line = done.assert_clear_error()
        assert str(lake_dir) in line, line
        line_x = done_x.assert_clear_error()
        assert str(out) in line_x, line_x
        assert not out.exists() and [p.name for p in out.parent.iterdir() if p.name != "filler.bin"] == []
        audit = audit_lake(open_lake(str(lake_dir)))
        audit.assert_clean()
        assert audit.rows["locations"] == 40
        assert not list((lake_dir / "_tmp").glob("*")), "temp files left behind"
        for f in fillers:
            f.unlink()
        ok(proc.cli(["--lake", str(lake_dir), "ingest", str(big)]))
        audit = audit_lake(open_lake(str(lake_dir)))
        audit.assert_clean()
        assert audit.rows["locations"] == 3040
        assert exported(str(lake_dir), "first", out) == json.loads(first.read_text())
