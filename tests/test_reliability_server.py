"""The openai backend against a faulty `cxbench serve`: bounded retries, bounded time, per-sample records.

Run with ``-s`` to print the time each fault took (the figures in docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import json
import time
from itertools import islice
from pathlib import Path

import pytest
from PIL import Image

from cxbench.models import load_model
from cxbench.models.openai_compat import OpenAIModel
from cxbench.runner import RunConfig, run_task
from cxbench.serve import FaultConfig, serve_in_thread
from cxbench.tasks import Task, get_task

TIMEOUT, RETRIES, MAX_WAIT = 1.0, 2, 0.4
#: the longest one request may take: every attempt times out and every wait is the longest allowed
BOUND = (RETRIES + 1) * TIMEOUT + RETRIES * MAX_WAIT

#: fault -> (answered in the end?, words the recorded error must contain, attempts the server saw)
FAULTS = {
    "fault500-twice": (True, None, 3),
    "fault429-once": (True, None, 2),
    "fault429-date": (True, None, 2),
    "fault429-long": (False, "HTTP 429", 3),
    "faultdrop": (False, "connection error", 3),
    "faultreset": (False, "connection error", 3),
    "faulttrickle": (False, "timed out", 3),
    "faulthang": (False, "timed out", 3),
    "faultempty": (False, "malformed JSON", 3),
    "faulthtml": (False, "HTTP 502", 3),
    "faultjson": (False, "malformed JSON", 3),
    "fault500": (False, "HTTP 500", 3),
}


@pytest.fixture()
def faulty_server(small_tasks):
    config = FaultConfig(slow_s=30.0, trickle_s=0.25, long_retry_after="3600")
    server, base_url = serve_in_thread(load_model("prior"), faults=config, include_paths=[small_tasks])
    try:
        yield server, base_url
    finally:
        started = time.perf_counter()
        server.shutdown()
        server.server_close()
        server.thread.join(timeout=5)
        assert time.perf_counter() - started < 5  # hung and trickling handlers are released


def _client(base_url: str, **kwargs) -> OpenAIModel:
    settings = {
        "timeout": TIMEOUT,
        "max_retries": RETRIES,
        "backoff": 0.05,
        "max_retry_wait": MAX_WAIT,
        "send_cxbench_fields": True,
        "concurrency": 16,
    }
    return OpenAIModel("prior", base_url=base_url, **{**settings, **kwargs})


def test_every_fault_is_retried_within_limits_and_bounded_in_time(faulty_server, small_tasks):
    server, base_url = faulty_server
    task = get_task("small_vqa_closed", [small_tasks])
    requests = [task.build_request(s) for s in islice(task.samples(), len(FAULTS) + 2)]
    direct = load_model("prior")
    direct.prepare(task)
    expected = {r.sample_id: resp.text for r, resp in zip(requests, direct.generate(requests), strict=True)}
    batch = [
        dataclasses.replace(r, sample_id=f"{r.sample_id}-{fault}")
        for r, fault in zip(requests, FAULTS, strict=False)
    ]
    batch += [dataclasses.replace(r, sample_id=f"{r.sample_id}-ok") for r in requests[len(FAULTS) :]]
    client = _client(base_url)
    times = {}
    complete = client._complete

    def timed(request):
        started = time.perf_counter()
        response = complete(request)
        times[request.sample_id] = time.perf_counter() - started
        return response

    client._complete = timed  # type: ignore[method-assign]
    started = time.perf_counter()
    responses = client.generate(batch)
    elapsed = time.perf_counter() - started
    assert len(responses) == len(batch)
    for request, response in zip(batch, responses, strict=True):
        original = request.sample_id.rsplit("-", 1)[0] if request.sample_id.endswith("-ok") else None
        fault = next((f for f in FAULTS if request.sample_id.endswith(f)), None)
        if fault is None:
            assert response.error is None and response.text == expected[original]
            continue
        answered, words, attempts = FAULTS[fault]
        base_id = request.sample_id[: -len(fault) - 1]
        # the server counts an attempt when its handler thread reads the request; on a loaded
        # machine an attempt the client already gave up on (1 s timeout) may be counted late or
        # never reach a handler. The client's own count is exact: "after N attempt(s)" below.
        deadline = time.monotonic() + 2.0
        while server.attempts[request.sample_id] < attempts and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 1 <= server.attempts[request.sample_id] <= attempts, fault
        if answered:  # the server answered the last attempt, so it has counted them all
            assert server.attempts[request.sample_id] == attempts, fault
            assert response.error is None and response.text == expected[base_id], fault
        else:
            assert response.text == "" and words in response.error, (fault, response.error)
            assert f"after {attempts} attempt" in response.error
        assert times[request.sample_id] <= BOUND + 0.5, (fault, times[request.sample_id])
    # Retry-After: 3600 was capped: two waits of MAX_WAIT, not an hour
    assert times[next(r.sample_id for r in batch if r.sample_id.endswith("fault429-long"))] < 1.5
    assert elapsed <= BOUND + 1.0  # all in parallel: the batch takes as long as its slowest request
    print(f"\nbound per request {BOUND:.1f} s; batch of {len(batch)}: {elapsed:.2f} s")
    for request in batch:
        print(f"  {request.sample_id.split('-', 1)[-1]:<16} {times[request.sample_id]:.2f} s")


def _fault_task(tmp_path: Path) -> Task:
    Image.new("L", (32, 32), 100).save(tmp_path / "x.png")
    rows = [
        {
            "id": f"case{i}-{fault}",
            "images": ["x.png"],
            "question": "Is there a nodule?",
            "target": "yes",
            "query": {"kind": "yes_no", "finding": "nodule"},
        }
        for i, fault in enumerate(["ok", "faultdrop", "fault500-twice", "faulttrickle", "faultreset", "ok"])
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "fault_vqa.yaml").write_text(
        "name: fault_vqa\nfamily: vqa_closed\n"
        f"dataset: {{name: jsonl, path: {tmp_path / 'data.jsonl'}, split: test}}\n"
        "prompt: '{question}'\nparser: closed\nlabels: [yes, no]\nmetrics: [accuracy]\n"
    )
    return Task.from_yaml(tasks / "fault_vqa.yaml")


def test_a_run_through_a_faulty_server_records_every_failure_per_sample(small_tasks, tmp_path):
    task = _fault_task(tmp_path)
    server, base_url = serve_in_thread(
        load_model("prior"), faults=FaultConfig(trickle_s=0.25), include_paths=[tmp_path / "tasks"]
    )
    try:
        model = _client(base_url, name="faulty")
        config = RunConfig(
            output_dir=tmp_path / "out", cache_path=tmp_path / "c.sqlite", n_bootstrap=10, progress=False
        )
        started = time.perf_counter()
        result, stats = run_task(task, model, config)
        assert time.perf_counter() - started < BOUND + 3
        assert result["n"] == 6 and result["errors"]["model_error"] == 3
        rows = [
            json.loads(line) for line in (tmp_path / "out" / "faulty" / "fault_vqa.samples.jsonl").open()
        ][1:]
        by_id = {r["sample_id"]: r for r in rows}
        assert by_id["case1-faultdrop"]["error"] == "model_error"
        assert "connection error" in by_id["case1-faultdrop"]["error_message"]
        assert "timed out" in by_id["case3-faulttrickle"]["error_message"]
        assert "connection error" in by_id["case4-faultreset"]["error_message"]
        assert by_id["case2-fault500-twice"]["error"] is None
        assert by_id["case2-fault500-twice"]["raw_output"] and by_id["case0-ok"]["error"] is None
        # failed answers are not cached: a re-run asks again for exactly those, and nothing else
        again, stats = run_task(task, _client(base_url, name="faulty"), config)
        assert stats.model_calls == 3 and stats.cache_hits == 3
    finally:
        server.shutdown()
        server.server_close()
