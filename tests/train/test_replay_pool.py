"""The self-replay pool (`train.replay_pool`, `train.replay_prior`): how many distinct base-model samples replay
draws from, and which share of them the base writes from nothing but the start of text (its own prior)."""

import pytest

from imprint import pipeline
from imprint.errors import ImprintError
from imprint.models import load_base
from imprint.train.config import TrainConfig
from imprint.train.replay import PROMPTS, replay_prompts, self_replay, self_replay_path
from imprint.workspace import Workspace


def test_the_prior_share_is_spread_evenly_and_zero_keeps_the_general_prompts_in_turn():
    assert replay_prompts(5, 0.0) == PROMPTS[:5]
    assert replay_prompts(6, 0.5) == [PROMPTS[0], "", PROMPTS[1], "", PROMPTS[2], ""]
    assert replay_prompts(8, 0.25) == [PROMPTS[0], PROMPTS[1], PROMPTS[2], "", PROMPTS[3], PROMPTS[4], PROMPTS[5], ""]
    assert replay_prompts(3, 1.0) == ["", "", ""]
    assert replay_prompts(2 * len(PROMPTS) + 1, 0.0)[-1] == PROMPTS[0]  # the prompts cycle


def test_pools_are_cached_apart_and_a_sample_with_no_text_is_no_record(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path))
    base = load_base("tiny")
    assert self_replay_path("tiny", 6, 8, 0, 0.0).name == "tiny-n6-t8-s0.jsonl"  # pools sampled before the setting
    assert self_replay_path("tiny", 6, 8, 0, 0.5) != self_replay_path("tiny", 6, 8, 0, 0.0)
    general = self_replay(base, 6, 8)
    mixed = self_replay(base, 6, 8, prior=0.5)
    assert self_replay_path("tiny", 6, 8, 0, 0.5).exists() and len(general) == 6
    # the random tiny model continues the start of text with nothing but start tokens: those samples are dropped
    assert len(mixed) == 3 and all(r.text.startswith(p) for r, p in zip(mixed, PROMPTS, strict=False))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        self_replay(base, 6, 8, prior=1.5)


def test_pool_settings_are_validated():
    assert TrainConfig().replay_pool >= 1 and 0 <= TrainConfig().replay_prior <= 1
    for bad in ({"replay_pool": 0}, {"replay_prior": -0.1}, {"replay_prior": 1.5}):
        with pytest.raises(ValueError, match="replay_pool"):
            TrainConfig(**bad)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("replay-pool")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "mill.md").write_text(
        "# Mill\n\nThe Sorrel mill grinds rye with a water wheel of oak. Miriam Hale ran it from 1902 to 1930.\n\n"
        "Flour goes to Kell by barge."
    )
    workspace = Workspace.open(tmp_path / "ws")
    pipeline.add(workspace, [str(tmp_path / "docs")], model="tiny", max_tokens=40)
    pipeline.synth(workspace, "rules")
    return workspace


TRAIN = {"epochs": "1", "replay": "0.5", "read": "0", "verify": "false", "checkpoint_every": "0", "compile": "off"}


def test_training_draws_replay_from_the_pool_it_is_told(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path))
    dataset = ws.datasets()[0].name
    out = pipeline.train_module(ws, [dataset], "pool3", "lora", "tiny", {"train": TRAIN | {"replay_pool": "3"}})
    assert self_replay_path("tiny", 3, 96, 0, 0.0).exists() and not self_replay_path("tiny").exists()
    assert out["n_replay_records"] > 3 and out["config"]["train"]["replay_pool"] == 3  # 3 samples, repeated


def test_an_empty_pool_stops_training_instead_of_training_without_replay(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path))
    settings = {"train": TRAIN | {"replay_pool": "4", "replay_prior": "1"}}  # tiny writes nothing from the start
    with pytest.raises(ImprintError, match="replay pool is empty"):
        pipeline.train_module(ws, [ws.datasets()[0].name], "empty", "lora", "tiny", settings)
    assert all(m.name != "empty" for m in ws.modules())  # nothing saved
