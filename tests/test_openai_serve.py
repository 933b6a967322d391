"""The openai backend end to end against a real `cxbench serve` HTTP server on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import time
from itertools import islice
from pathlib import Path

import pytest
from PIL import Image

from cxbench.models import load_model
from cxbench.models.openai_compat import OpenAIModel, image_data_url
from cxbench.runner import RunConfig, run_task
from cxbench.schema import Request
from cxbench.serve import FaultConfig, add_serve_arguments, cli_serve, serve_in_thread
from cxbench.tasks import get_task


@pytest.fixture()
def served_prior(small_tasks):
    """`prior` behind a loopback server with fault injection on; stopped after the test."""
    server, base_url = serve_in_thread(
        load_model("prior"), faults=FaultConfig(slow_s=3.0), include_paths=[small_tasks]
    )
    try:
        yield server, base_url
    finally:
        server.shutdown()
        server.server_close()
        server.thread.join(timeout=5)
        assert not server.thread.is_alive()
        assert not server.image_dir.exists()  # decoded images are removed at shutdown


@pytest.fixture(scope="module")
def vqa(small_tasks):
    task = get_task("small_vqa_closed", [small_tasks])
    requests = [task.build_request(s) for s in islice(task.samples(), 16)]
    direct = load_model("prior")
    direct.prepare(task)
    return task, requests, [r.text for r in direct.generate(requests)]


def _client(base_url: str, **kwargs) -> OpenAIModel:
    settings = {"timeout": 5.0, "max_retries": 2, "backoff": 0.01, "send_cxbench_fields": True}
    return OpenAIModel("prior", base_url=base_url, **{**settings, **kwargs})


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_served_prior_answers_like_prior_and_receives_the_images(served_prior, vqa):
    server, base_url = served_prior
    _, requests, expected = vqa
    responses = _client(base_url).generate(requests)
    assert [r.error for r in responses] == [None] * len(requests)
    assert [r.text for r in responses] == expected
    assert all(r.latency_s is not None and r.latency_s >= 0 for r in responses)
    # the server rebuilt each Request: same structured fields, and images that decode to the same bytes
    received = {r.sample_id: r for r in server.received}
    assert set(received) == {r.sample_id for r in requests}
    for request in requests:
        got = received[request.sample_id]
        assert (got.task, got.family, got.choices, got.query) == (
            request.task,
            request.family,
            request.choices,
            request.query,
        )
        assert got.prompt == request.prompt
        assert got.generation["max_new_tokens"] == request.generation["max_new_tokens"]
        assert len(got.images) == len(request.images) > 0
        for sent, stored in zip(request.images, got.images, strict=True):
            assert Path(stored).parent == server.image_dir
            assert _sha(stored) == _sha(sent) == Path(stored).stem  # content-hashed name
            with Image.open(stored) as image:
                image.load()


def test_request_body_images_key_and_config(tmp_path, monkeypatch):
    Image.new("L", (8, 8), 7).save(tmp_path / "x.jpg", format="JPEG")
    Image.new("L", (8, 8), 7).save(tmp_path / "y.png")
    assert image_data_url(tmp_path / "x.jpg").startswith("data:image/jpeg;base64,")
    assert image_data_url(tmp_path / "y.png").startswith("data:image/png;base64,")
    request = Request(
        sample_id="s1",
        task="t",
        family="vqa_closed",
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image", "path": str(tmp_path / "y.png")},
                    {"type": "text", "text": "Is it?"},
                ],
            },
        ],
        images=[str(tmp_path / "y.png")],
        generation={"max_new_tokens": 7, "temperature": 0.0, "top_p": 0.9, "stop": ["\n"], "num_beams": 1},
    )
    model = OpenAIModel("m", api_key_env="CXBENCH_TEST_KEY", top_k=20)
    body = model.build_body(request)
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    image_part, text_part = body["messages"][1]["content"]
    assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith("data:image/png")
    assert text_part == {"type": "text", "text": "Is it?"}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"]) == (7, 0.0, 0.9, ["\n"])
    assert body["top_k"] == 20 and "num_beams" not in body and "cxbench" not in body
    monkeypatch.delenv("CXBENCH_TEST_KEY", raising=False)
    assert "Authorization" not in model._headers()
    monkeypatch.setenv("CXBENCH_TEST_KEY", "sk-secret")
    assert model._headers()["Authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in json.dumps(model.config()) + model.identity()
    assert model.identity() == "openai:http://127.0.0.1:8000/v1:m:[('top_k', 20)]"


def test_faults_are_retried_or_recorded_and_no_sample_is_lost(served_prior, vqa):
    server, base_url = served_prior
    _, requests, expected = vqa
    ids = ["ok-a", "x-fault500", "x-faultslow", "ok-b", "x-faultjson", "x-fault429-once"]
    batch = [dataclasses.replace(r, sample_id=i) for r, i in zip(requests, ids, strict=False)]
    bad_task = dataclasses.replace(requests[6], sample_id="ok-badtask", task="no_such_task")
    batch.append(bad_task)
    client = _client(base_url, timeout=0.6, max_retries=2)
    started = time.perf_counter()
    responses = client.generate(batch)
    elapsed = time.perf_counter() - started
    assert len(responses) == len(batch)
    by_id = {r.sample_id: resp for r, resp in zip(batch, responses, strict=True)}
    for ok, index in (("ok-a", 0), ("ok-b", 3), ("x-fault429-once", 5)):
        assert by_id[ok].error is None and by_id[ok].text == expected[index]
    assert server.attempts["x-fault429-once"] == 2  # 429 with Retry-After: 0, then success
    assert "HTTP 500" in by_id["x-fault500"].error and "after 3 attempt" in by_id["x-fault500"].error
    assert server.attempts["x-fault500"] == 3
    assert "timed out" in by_id["x-faultslow"].error and "after 3 attempt" in by_id["x-faultslow"].error
    assert "malformed JSON" in by_id["x-faultjson"].error and server.attempts["x-faultjson"] == 3
    # an unknown task is the client's mistake: HTTP 400, not retried
    assert "HTTP 400" in by_id["ok-badtask"].error and "not retried" in by_id["ok-badtask"].error
    assert server.attempts["ok-badtask"] == 1
    assert all(by_id[i].text == "" for i in ("x-fault500", "x-faultslow", "x-faultjson", "ok-badtask"))
    assert elapsed < 4.0  # three 0.6 s timeouts plus small backoffs (~1.9 s), in parallel with the rest


def test_results_do_not_depend_on_batch_size(served_prior, vqa):
    _, base_url = served_prior
    _, requests, expected = vqa
    client = _client(base_url)
    one = [client.generate([r])[0].text for r in requests]
    eights = [resp.text for i in range(0, len(requests), 8) for resp in client.generate(requests[i : i + 8])]
    assert one == eights == expected


def test_unreachable_server_gives_every_request_an_error_quickly(vqa):
    _, requests, _ = vqa
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}/v1", timeout=0.5)
    started = time.perf_counter()
    responses = client.generate(requests[:8])
    assert time.perf_counter() - started < 2.0
    assert len(responses) == 8
    for response in responses:
        assert response.text == "" and "connection" in response.error.lower()
        assert "after 3 attempt" in response.error


def test_runner_through_the_server_matches_prior_directly(served_prior, small_tasks, tmp_path):
    _, base_url = served_prior
    task = get_task("small_vqa_closed", [small_tasks])
    config = RunConfig(output_dir=tmp_path / "out", cache_path="", n_bootstrap=50, progress=False)
    direct, _ = run_task(task, load_model("prior"), config)
    remote, stats = run_task(task, _client(base_url), config, spec="openai:prior")
    assert stats.model_calls == remote["n"] == direct["n"] > 0
    assert remote["errors"] == direct["errors"]
    assert remote["metrics"] == direct["metrics"]
    assert remote["model"]["identity"].startswith(f"openai:{base_url}:prior:")


def test_serve_cli_refuses_a_non_loopback_host(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert cli_serve(parser.parse_args(["prior", "--host", "0.0.0.0", "--port", "0"])) == 2
    assert "--allow-remote" in capsys.readouterr().err
