"""The server reads `model` with the one `name@version` parser and applies calibrations per collection.

- Every malformed reference (`x@²`, `x@①`, `x@١`, `x@-1`, `x@0`, a huge version, `@@`...) is the 404 a module that
  does not exist gets, never a 500, and the next request on the same keep-alive connection is answered.
- A calibration fitted on one collection changes only the answers read from that collection; a workspace-level
  file from before calibrations were per collection is the default collection's only.
"""

import http.client
import json
from urllib.parse import quote

import pytest

from imprint import pipeline
from imprint.answer.calibration import Calibration, calibration_path
from imprint.serve import BackgroundServer, ServeConfig, create_app
from imprint.workspace import Workspace

KEYS = """
tenants:
  acme:
    keys: ["sk-acme"]
    collections: ["acme"]
    base: true
  house:
    keys: ["sk-house"]
    collections: ["default"]
    base: true
"""
DOCS = {
    "acme": "# Acme vault\n\nThe Acme vault PIN is 90210. Acme keeps its spare keys in Springfield.\n",
    "default": "# House launch\n\nThe House launch code is BLUEFALCON-7731. House rockets fly from Cypress Creek.\n",
}
BAD = ["x@²", "x@①", "x@١", "x@-1", "x@0", "x@" + "9" * 40, "x@" + "9" * 300, "@@", "x@", "x@1@2", "tiny@1", "a b", ""]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-scope")
    ws = Workspace.open(root / "ws")
    for collection, text in DOCS.items():
        (root / collection).mkdir()
        (root / collection / "doc.md").write_text(text)
        pipeline.add(ws, [str(root / collection)], model="tiny", collection=collection)
    # `x@1` exists (acme's; never loaded here): `x@١` must not be read as it
    ws.register_module("x", 1, "lora", "tiny", str(root / "x"), ws.corpus_version("acme"), {}, collection="acme")
    ws.close()
    (root / "keys.yaml").write_text(KEYS)
    app = create_app(root / "ws", model="tiny", keys=root / "keys.yaml", config=ServeConfig(default_max_tokens=8))
    with BackgroundServer(app) as running:
        yield running, root / "ws"


def _post(conn, key: str, body: dict) -> tuple[int, dict]:
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Authorization": f"Bearer {key}",
                                                                     "Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.parametrize("model", BAD)
def test_a_bad_model_reference_is_a_404_and_the_connection_lives_on(server, model):
    running, _ = server
    conn = http.client.HTTPConnection(running.host, running.port, timeout=60)
    try:
        ask = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        status, body = _post(conn, "sk-acme", {"model": model, **ask})
        if 1 <= len(model) <= 256:  # the API's limits on `model`'s length answer first, with a 400
            assert status == 404 and body["error"]["code"] == "model_not_found"
        else:
            assert status == 400 and body["error"]["param"] == "model"
        sock = conn.sock
        assert sock is not None  # the server kept the connection open (no `Connection: close`)
        status, body = _post(conn, "sk-acme", {"model": "tiny", **ask})
        assert status == 200 and body["model"] == "tiny" and conn.sock is sock  # same connection, answered
        if model:
            conn.request("GET", f"/v1/models/{quote(model, safe='@')}", headers={"Authorization": "Bearer sk-acme"})
            response = conn.getresponse()
            assert response.status == 404 and json.loads(response.read())["error"]["code"] == "model_not_found"
    finally:
        conn.close()


def _confidence(running, key: str) -> float:
    conn = http.client.HTTPConnection(running.host, running.port, timeout=120)
    try:
        ask = [{"role": "user", "content": "What is the vault PIN or the launch code?"}]
        status, body = _post(conn, key, {"model": "tiny", "messages": ask, "imprint": {"retrieval": True}})
    finally:
        conn.close()
    assert status == 200 and body["imprint"]["evidence"]
    return body["imprint"]["confidence"]


def _constant(confidence_bias: float) -> Calibration:
    """A fitted calibration whose confidence is the same for every answer (sigmoid of the bias)."""
    params = {"mean": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0], "weights": [0.0, 0.0, 0.0, confidence_bias]}
    return Calibration("rag", params, None, 0.5, {"calibrated": True})


def test_a_collection_s_calibration_applies_to_its_answers_only(server):
    running, ws_dir = server
    raw = {key: _confidence(running, key) for key in ("sk-acme", "sk-house")}
    _constant(6.0).save(calibration_path(ws_dir, "rag", "acme"))  # sigmoid(6) = 0.9975
    assert _confidence(running, "sk-acme") == 0.9975
    assert _confidence(running, "sk-house") == raw["sk-house"] != 0.9975
    _constant(-6.0).save(ws_dir / "calibration" / "rag.json")  # a workspace-level file of an older workspace
    assert _confidence(running, "sk-house") == 0.0025  # read for the default collection
    assert _confidence(running, "sk-acme") == 0.9975  # acme's own, never the default collection's
    (ws_dir / "calibration" / "acme" / "rag.json").unlink()
    assert _confidence(running, "sk-acme") == raw["sk-acme"]
