"""Secrets: with a recognisable fake API key and URL-signing secret, run the whole pipeline
through failures and retries, a refused key (with --debug: the traceback too), a malformed secret,
and the report; then search every byte the runs left: stdout/stderr, every lake file
(raw bytes and decoded Parquet values), the export, summary and report, and everything the
Prefect API holds (logs, artifacts, flow and task runs). Zero occurrences."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pyarrow.parquet as pq

from svcluster.tasks.fetch.server import Fault
from tests.reliability import proc
from tests.reliability.conftest import FAKE_KEY, FAKE_SECRET, RUN_OPTIONS

DECODED_SECRET = base64.urlsafe_b64decode(FAKE_SECRET)
NEEDLES = [FAKE_KEY.encode(), FAKE_SECRET.encode(), FAKE_SECRET.rstrip("=").encode(), quote(FAKE_SECRET, safe="").encode(),
           DECODED_SECRET, DECODED_SECRET.hex().encode(), base64.b64encode(FAKE_KEY.encode())]
MALFORMED_SECRET = "not+base64*svcluster-secret-FAKE!"


def leaks(data: bytes) -> list[str]:
    found = [n.decode("latin-1") for n in NEEDLES + [MALFORMED_SECRET.encode()] if n in data]
    return found


def prefect_records() -> dict[str, bytes]:
    """Everything the Prefect API holds about this session's runs, as JSON bytes."""
    from prefect.client.orchestration import get_client

    out: dict[str, bytes] = {}
    with get_client(sync_client=True) as client:
        for name, read in (("logs", client.read_logs), ("artifacts", client.read_artifacts),
                           ("flow_runs", client.read_flow_runs), ("task_runs", client.read_task_runs)):
            chunks, offset = [], 0
            while True:
                page = read(limit=200, offset=offset)
                chunks += [item.model_dump_json().encode() for item in page]
                if len(page) < 200:
                    break
                offset += 200
            out[name] = b"\n".join(chunks)
        try:
            out["variables"] = b"\n".join(v.model_dump_json().encode() for v in client.read_variables())
        except Exception:  # noqa: BLE001 - older servers: no variables endpoint
            pass
    return out


def test_no_secret_anywhere(world, tmp_path) -> None:
    # failures and retries on the way: transient 500/429/resets/truncations, one dead panorama
    panos = [str(loc["panoId"]) for loc in world.locations]
    for i, kind in enumerate(["500", "429", "over_query_limit", "reset", "truncated", "500", "unknown_error"]):
        world.server.add_fault(Fault(kind, endpoint="image" if kind == "truncated" else "any", pano=panos[i], times=2))
    world.server.add_fault(Fault("503", endpoint="metadata", pano=panos[-1], times=None))
    lake, out = tmp_path / "lake", tmp_path / "out"
    env = world.env
    logs: dict[str, str] = {}

    def run(name: str, args: list[str], env=env, expect_ok: bool = True) -> proc.Finished:
        done = proc.run(args, env, cwd=tmp_path, log=tmp_path / name, timeout=300)
        logs[name] = done.out + done.err
        if expect_ok:
            assert done.code == 0, f"{name}: {done.err[-3000:]}"
        return done

    run("pipeline", ["--lake", str(lake), "run", str(world.map_file), *RUN_OPTIONS, "--verbose",
                     "--out", str(out / "tagged.json"), "--summary", str(out / "summary.md")])
    run("report", ["--lake", str(lake), "report", "chile-small@v1", "--out", str(out / "report")])
    assert world.server.counts["total"] > 0
    # refused key: the error names the variable, never its value (also the --debug traceback)
    bad_env = dict(env, GOOGLE_MAPS_API_KEY=FAKE_KEY + "x")
    world.server.clear_faults()
    for name, extra in (("refused-debug", ["--debug"]),):  # the traceback holds the one-line message too
        done = run(name, ["--lake", str(lake), *extra, "fetch", "--map", "chile-small", "--headings", "90"], env=bad_env,
                   expect_ok=False)
        assert done.code != 0
    done = run("malformed", ["--lake", str(lake), "fetch", "--map", "chile-small", "--headings", "90"],
               env=dict(env, GOOGLE_MAPS_SIGNING_SECRET=MALFORMED_SECRET), expect_ok=False)
    assert done.code != 0 and "GOOGLE_MAPS_SIGNING_SECRET" in done.err

    assert leaks(b"..." + FAKE_KEY.encode() + b"...") and leaks(DECODED_SECRET)  # the search itself works
    found: list[str] = []
    scanned = {"log lines": 0, "files": 0, "parquet values": 0, "prefect records": 0}
    for name, text in logs.items():
        scanned["log lines"] += text.count("\n")
        found += [f"{name} output: {n}" for n in leaks(text.encode())]
    for path in sorted(tmp_path.rglob("*")):
        if not path.is_file():
            continue
        scanned["files"] += 1
        data = path.read_bytes()
        found += [f"{path.relative_to(tmp_path)}: {n}" for n in leaks(data)]
        if path.suffix == ".parquet":  # compressed pages hide text from a byte search: decode
            table = pq.read_table(path)
            values = json.dumps(table.to_pylist(), default=str).encode()
            scanned["parquet values"] += table.num_rows * table.num_columns
            found += [f"{path.relative_to(tmp_path)} (decoded): {n}" for n in leaks(values)]
    for name, data in prefect_records().items():
        scanned["prefect records"] += data.count(b"\n") + (1 if data else 0)
        found += [f"Prefect {name}: {n}" for n in leaks(data)]
    assert scanned["prefect records"] > 0 and scanned["parquet values"] > 0
    assert not found, "secret found:\n  " + "\n  ".join(found)
    print(f"\nsecrets: 0 occurrences; scanned {scanned}")
