"""Two tenants on one workspace, each owning a collection: nothing of one ever reaches the other.

The security review of issue 15, rerun against a real server on 127.0.0.1: acme owns collection `acme` (module
`acme-notes`), globex owns `globex` (module `globex-plans`), both trained by the real pipeline on `tiny`. Every
endpoint is called by both keys, streamed and not, with retrieval (k=20), evidence and an explicit collection,
and a document is added to acme's collection while the server runs; the raw bytes of every response of one
tenant must hold no quote, document id, title, chunk id, module or collection name of the other, and the stats
endpoint shows each tenant only its own counts.
"""

import json

import httpx
import openai
import pytest

from imprint import pipeline
from imprint.serve import BackgroundServer, ServeConfig, create_app
from imprint.synth.records import read_records
from imprint.workspace import Workspace

ACME = "# Acme vault\n\nThe Acme vault PIN is 90210. Acme keeps its spare keys in Springfield.\n"
GLOBEX = "# Globex launch\n\nThe Globex secret launch code is BLUEFALCON-7731. Globex rockets fly from Cypress Creek.\n"
ACME_LATER = "# Acme backup\n\nThe Acme backup vault PIN is 4471.\n"
KEYS = """
tenants:
  acme:
    keys: ["sk-acme"]
    collections: ["acme"]
    base: true
  globex:
    keys: ["sk-globex"]
    collections: ["globex"]
    base: true
  ops:
    keys: ["sk-ops"]
    admin: true
"""
TRAIN = {"train": {"epochs": 1, "lr": 1e-2, "checkpoint_every": 0, "verify": False}, "lora": {"r": 4, "alpha": 8}}


@pytest.fixture(scope="module")
def tenants_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-tenants")
    for name, text in (("acme", ACME), ("globex", GLOBEX)):
        folder = root / f"{name}-docs"
        folder.mkdir()
        (folder / f"{name}.md").write_text(text)
    ws = Workspace.open(root / "ws")
    for name, module in (("acme", "acme-notes"), ("globex", "globex-plans")):
        pipeline.add(ws, [str(root / f"{name}-docs")], model="tiny", collection=name)
        dataset = pipeline.synth(ws, "rules", name=f"{name}-rules", collection=name)["name"]
        pipeline.train_module(ws, [dataset], module, "lora", model="tiny", overrides=TRAIN)
    ws.close()
    (root / "keys.yaml").write_text(KEYS)
    return root


def test_each_module_is_trained_on_its_own_collection_only(tenants_ws):
    ws = Workspace.open(tenants_ws / "ws")
    for collection, module in (("acme", "acme-notes"), ("globex", "globex-plans")):
        own = {c.id for c in ws.chunks(collection=collection)}
        records = read_records(ws.data_dir(f"{collection}-rules"))
        sources = {chunk for r in records for chunk in r.source_chunk_ids}
        assert records and own and sources <= own
        entry = ws.get_module(module)
        assert entry.collection == collection == entry.manifest["collection"]
        assert entry.corpus_version == ws.corpus_version(collection) != ws.corpus_version()
    texts = " ".join(r.to_json() for r in read_records(ws.data_dir("globex-rules")))
    assert "BLUEFALCON" in texts and "90210" not in texts and "Acme" not in texts


@pytest.fixture(scope="module")
def two_tenants(tenants_ws):
    config = ServeConfig(max_tokens=64, default_max_tokens=8, max_loaded_indexes=1)
    app = create_app(tenants_ws / "ws", model="tiny", keys=tenants_ws / "keys.yaml", config=config)
    with BackgroundServer(app) as running:
        yield running


def _calls(tenant: str, other: str) -> list[tuple[str, str, dict | None]]:
    """(method, path, body) of every endpoint and extension field, for `tenant`'s own module and the other's."""
    module = {"acme": "acme-notes", "globex": "globex-plans"}
    mine, theirs = module[tenant], module[other]
    ask = [{"role": "user", "content": "What is the vault PIN or the launch code?"}]
    calls: list[tuple[str, str, dict | None]] = [
        ("GET", "/models", None),
        ("GET", f"/models/{mine}", None),
        ("GET", f"/models/{theirs}", None),
        ("GET", f"/models/{theirs}@1", None),
    ]
    for stream in (False, True):
        for model in ("tiny", mine, theirs):
            calls.append(("POST", "/chat/completions", {"model": model, "messages": ask, "stream": stream}))
            calls.append(("POST", "/completions", {"model": model, "prompt": "The code is", "stream": stream}))
            for options in ({"retrieval": True, "k": 20}, {"evidence": True, "k": 20},
                            {"retrieval": True, "k": 20, "collection": tenant},
                            {"retrieval": True, "k": 20, "collection": other}):  # fmt: skip
                body = {"model": model, "messages": ask, "stream": stream, "imprint": options}
                calls.append(("POST", "/chat/completions", body))
    calls.append(("GET", "/imprint/stats", None))
    return calls


def _scan(server, tenant: str, other: str) -> tuple[str, dict[tuple, int]]:
    """Every response body of `tenant`'s calls, concatenated, and the status of each call. A call naming the other
    tenant's module or collection must get, byte for byte, the answer a name that exists nowhere gets (it echoes
    the name the caller sent, nothing else): those bodies are compared that way and left out of the scan."""
    theirs = {"acme": "acme-notes", "globex": "globex-plans"}[other]
    seen, statuses = [], {}
    headers = {"Authorization": f"Bearer sk-{tenant}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
        for method, path, body in _calls(tenant, other):
            sent = json.dumps(body, sort_keys=True)
            response = http.request(method, path, json=body)
            statuses[(method, path, sent)] = response.status_code
            if theirs not in path and f'"{other}' not in sent:
                seen.append(response.text)
                continue
            fake = json.loads(sent.replace(f'"{theirs}', '"zz-mod').replace(f'"{other}"', '"zz-col"'))
            missing = http.request(method, path.replace(theirs, "zz-mod"), json=fake)
            echoed = response.text.replace(theirs, "zz-mod").replace(f"'{other}'", "'zz-col'")
            assert (response.status_code, echoed) == (missing.status_code, missing.text)
    return "\n".join(seen), statuses


def _secrets(ws: Workspace, collection: str) -> set[str]:
    """What must never reach another tenant: names, quotes' sources, document ids, titles and chunk ids."""
    module = {"acme": "acme-notes", "globex": "globex-plans"}[collection]
    found = {collection, module, "90210" if collection == "acme" else "BLUEFALCON"}
    for doc in ws.documents(collection=collection, include_deleted=True):
        found |= {doc.id, doc.title, *(s for s in doc.text.split(". ") if len(s) > 12)}
    found |= {c.id for c in ws.chunks(collection=collection)}
    return found


def test_nothing_of_the_other_tenant_reaches_a_key(two_tenants, tenants_ws):
    ws = Workspace.open(tenants_ws / "ws")
    folder = tenants_ws / "acme-later"
    folder.mkdir()
    (folder / "backup.md").write_text(ACME_LATER)
    pipeline.add(ws, [str(folder)], model="tiny", collection="acme")  # as `imprint add` would, while serving

    seen = {}
    for tenant, other in (("acme", "globex"), ("globex", "acme")):
        text, statuses = _scan(two_tenants, tenant, other)
        seen[tenant] = text
        lowered = text.lower()
        leaked = [s for s in _secrets(ws, other) if s.lower() in lowered]
        assert not leaked, f"{tenant} saw {other}'s {leaked}"
        foreign = [call for call, status in statuses.items() if other in call[1] or f'"{other}' in call[2]]
        assert foreign and all(statuses[call] == 404 for call in foreign), [statuses[c] for c in foreign]
        assert all(status == 200 for call, status in statuses.items() if call not in foreign)
    # the scan is not vacuous: each tenant did get its own evidence, the new document included
    assert "90210" in seen["acme"] and "4471" in seen["acme"] and "acme-notes" in seen["acme"]
    assert "BLUEFALCON" in seen["globex"] and "globex-plans" in seen["globex"]


def test_stats_show_a_tenant_only_its_own_numbers(two_tenants):
    def stats(key):
        return httpx.get(f"{two_tenants.url}/imprint/stats", headers={"Authorization": f"Bearer {key}"}).json()

    before = {key: stats(key) for key in ("sk-acme", "sk-globex")}
    acme = openai.OpenAI(base_url=two_tenants.url, api_key="sk-acme", max_retries=0, timeout=60)
    for _ in range(3):
        acme.completions.create(model="acme-notes", prompt="x", max_tokens=2, temperature=0)
    after = {key: stats(key) for key in ("sk-acme", "sk-globex")}
    assert after["sk-acme"]["requests"] == before["sk-acme"]["requests"] + 3
    assert after["sk-globex"] == before["sk-globex"]  # another tenant's traffic does not move a single number
    assert set(after["sk-globex"]) == {"tenant", "requests", "completion_tokens", "in_flight", "modules"}
    assert after["sk-globex"]["tenant"] == "globex" and after["sk-acme"]["modules"]["loaded"] == 1
    admin = stats("sk-ops")  # server-wide for an admin key: every tenant, the module cache, the index LRU
    assert admin["tenants"]["acme"]["requests"] == after["sk-acme"]["requests"]
    assert admin["modules"]["loaded"] >= 1 and "scheduler" in admin
    assert admin["indexes"]["capacity"] == 1 and admin["indexes"]["open"] == 1 and admin["indexes"]["evictions"] >= 1


def test_an_out_of_range_module_version_is_a_404_not_a_500(two_tenants):
    body = {"model": "acme-notes@99999999999999999999999", "prompt": "x", "max_tokens": 2}
    response = httpx.post(f"{two_tenants.url}/completions", json=body, headers={"Authorization": "Bearer sk-acme"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
