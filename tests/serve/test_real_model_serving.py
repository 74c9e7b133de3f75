"""Serving on the real gemma-3-270m (slow): a continuously batched mix of base, LoRA and prefix rows gives each row
the log-probabilities its own model gives, and the server answers a chat.

The mixed batch runs in fp32, so each row must match its own model to 1e-3 nats, while the adapters and the prefix
move their rows' log-probabilities by nats (asserted: more than 10x the tolerance): a row decoded with the wrong
module, or with none, cannot pass. In bf16 the engine and PEFT differ by up to 0.1-0.5 nats on such adapters, a
tolerance that weaker modules' effects (0.3-1 nat, the B ~ N(0, 0.02) adapters this test used before) fit inside."""

import openai
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from imprint.inference import Batch, Row, Sampling
from imprint.inference.multilora import LoraBank
from imprint.methods.prefix.method import PrefixModel
from imprint.models import load_base
from imprint.serve import BackgroundServer, ServeConfig, create_app

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on two cores shared with other work wait on each other between small ops (4x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _teacher_forced(model, prompt_ids, ids):
    full = torch.tensor([prompt_ids + ids])
    with torch.no_grad():  # logits only where the generated tokens were predicted: 262k columns each
        logits = model(input_ids=full, logits_to_keep=len(ids) + 1).logits[0, :-1].float().log_softmax(-1)
    return logits.gather(-1, torch.tensor(ids)[:, None])[:, 0]


def test_continuous_mixed_batch_on_gemma(tmp_path):
    base = load_base("gemma-3-270m", dtype=torch.float32)
    model = base.model
    for i in range(3):  # random nonzero B, large enough that each adapter moves its row's log-probs by nats
        torch.manual_seed(i)
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
        peft.save_pretrained(tmp_path / f"a{i}")
        model = peft.unload()
    text_config = model.config.get_text_config()
    torch.manual_seed(5)
    shape = (1, text_config.num_key_value_heads, 6, text_config.head_dim)
    prefix = ([3 * torch.randn(shape) for _ in range(text_config.num_hidden_layers)],
              [3 * torch.randn(shape) for _ in range(text_config.num_hidden_layers)])  # fmt: skip
    bank = LoraBank(model)
    for i in range(3):
        bank.load(f"a{i}", tmp_path / f"a{i}")
    tok = base.tokenizer

    def row(text, adapter="__base__", with_prefix=False):
        ids = tok(f"Question: {text}\nAnswer:")["input_ids"]
        return Row(ids, Sampling(max_tokens=6, temperature=0), adapter=adapter, prefix=prefix if with_prefix else None)

    first = [row("Who wrote Hamlet?", "a0"), row("What is the capital of France?"), row("What is 2+2?", "a1")]
    later = [row("Who painted the Mona Lisa?", "a2"), row("Where is Lisbon?", with_prefix=True)]
    batch = Batch(model, tok, router=bank)
    batch.admit(first)
    batch.step()
    batch.admit(later)  # joins a running batch; four adapters in the layers: the grouped path
    while batch:
        batch.step()

    plain = load_base("gemma-3-270m", dtype=torch.float32).model
    reference = PeftModel.from_pretrained(plain, str(tmp_path / "a0"), adapter_name="a0")
    for i in (1, 2):
        reference.load_adapter(str(tmp_path / f"a{i}"), adapter_name=f"a{i}")
    reference.eval()
    atol = 1e-3  # fp32: what a batch's shape changes in the kernels' sums, far below any module's effect
    for r in first + later:
        assert len(r.ids) == 6 and r.finish_reason == "length"
        with reference.disable_adapter():
            plain = reference.get_base_model()
            bare = _teacher_forced(plain, r.prompt_ids, r.ids)  # the same tokens, without the row's module
            own = _teacher_forced(PrefixModel(plain, *prefix).eval(), r.prompt_ids, r.ids) if r.prefix else bare
        if r.adapter != "__base__":
            reference.set_adapter(r.adapter)
            own = _teacher_forced(reference, r.prompt_ids, r.ids)
        torch.testing.assert_close(torch.tensor(r.logprobs), own, atol=atol, rtol=0)
        moved = (own - bare).abs().max().item()  # what the row's module did to these log-probabilities
        assert moved > 10 * atol if (r.adapter != "__base__" or r.prefix) else moved == 0, (r.adapter, moved)


def test_chat_on_gemma_stops_before_the_next_turn(tmp_path):
    config = ServeConfig(max_tokens=32, default_max_tokens=32)
    with BackgroundServer(create_app(tmp_path / "ws", model="gemma-3-270m", config=config)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0, timeout=300)
        messages = [{"role": "system", "content": "You answer in one short sentence."},
                    {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip
        out = client.chat.completions.create(model="gemma-3-270m", messages=messages, temperature=0)
        text = out.choices[0].message.content
        assert text and "User:" not in text and out.usage.completion_tokens <= 32
        chunks = client.chat.completions.create(model="gemma-3-270m", messages=messages, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
