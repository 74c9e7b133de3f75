"""Training that cannot fail silently: non-finite steps are skipped and counted, a streak stops the run with one
line and a resumable checkpoint, compiled code proves itself against eager code (and falls back when it does
not), and a module with a NaN is neither saved nor loaded.

Broken compilers are real torch.compile backends registered here whose output is NaN (all the time, or from a
chosen step on): the code under test is imprint's, unchanged.
"""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from imprint.cli import main
from imprint.errors import TrainingError
from imprint.integrity import NonFiniteModuleError, check_module_files, check_trained
from imprint.methods.lora.config import LoraMethodConfig
from imprint.methods.lora.method import LoraMethod
from imprint.synth.records import SynthRecord
from imprint.testing import tiny_lm
from imprint.train.compute import CompileFallback
from imprint.train.config import TrainConfig
from imprint.train.data import encode_record
from imprint.train.loop import NonFiniteStep, train

RECORDS = [
    SynthRecord.make("rules", ["d:v1:0"], "qa", question="Who leads finance?", answer="Priya Raman"),
    SynthRecord.make("rules", ["d:v1:0"], "qa", question="How many leave days?", answer="27 days"),
    SynthRecord.make("rules", ["d:v1:0"], "text", text="Priya Raman has served as chief financial officer."),
    SynthRecord.make("rules", ["d:v1:0"], "text", text="Employees receive 27 days of paid annual leave per year."),
]
# while on, the broken backend multiplies its outputs by factor; while fail, compiling anything anew raises
POISON = {"on": False, "factor": float("nan"), "fail": False}


def _poisoned(out):
    if not POISON["on"]:
        return out
    scale = POISON["factor"]
    return torch.utils._pytree.tree_map(lambda t: t * scale if torch.is_tensor(t) and t.is_floating_point() else t, out)


def _broken_backend(gm, example_inputs):
    if POISON["fail"]:  # as Inductor's C++ build failed mid-run on an AVX2-only EPYC (`at::vec` not declared)
        raise RuntimeError("C++ compile error: 'at::vec' has not been declared (test backend)")
    return lambda *args: _poisoned(gm(*args))


torch._dynamo.register_backend(compiler_fn=_broken_backend, name="imprint_test_broken")


@pytest.fixture(autouse=True)
def fresh_dynamo(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))  # compile verdicts of these tests stay here
    torch._dynamo.reset()
    POISON.update(on=False, factor=float("nan"), fail=False)
    yield
    torch._dynamo.reset()


def lora_run(config: TrainConfig, hook=None, progress=None, checkpoint=None, resume=False):
    model, tok = tiny_lm()
    torch.manual_seed(0)
    lora = LoraMethod().attach(model, LoraMethodConfig(r=4, alpha=8))
    handle = lora.get_base_model().model.layers[0].register_forward_hook(hook) if hook else None
    examples = [encode_record(r, tok, 128) for r in RECORDS]
    try:
        result = train(
            lora, examples, tok.pad_token_id, config, progress=progress, checkpoint=checkpoint, resume=resume
        )
    finally:
        if handle:
            handle.remove()
    weights = {n: p.detach().clone() for n, p in lora.named_parameters() if p.requires_grad}
    return result, weights


class NaNAtSteps:
    """A forward hook that turns the first decoder layer's output into NaN during chosen optimizer steps."""

    def __init__(self, steps: set[int]):
        self.steps, self.step = steps, 1

    def hook(self, module, inputs, output):
        if self.step in self.steps:
            return (output[0] * float("nan"), *output[1:]) if isinstance(output, tuple) else output * float("nan")
        return output

    def progress(self, done, total, info):
        self.step = done + 1


def learn_tiny_module(tmp_path, monkeypatch) -> None:
    """`imprint learn` of one sentence on the tiny model as module m@1 (plumbing: no held-in check)."""
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "a.md").write_text("Priya Raman has served as chief financial officer since March 2019.")
    args = ["learn", str(tmp_path / "a.md"), "--name", "m", "--set", "train.epochs=1", "--set", "train.verify=false"]
    assert main(args) == 0


# one micro-batch per step: 8 steps over the four records
SMALL = dict(epochs=8, lr=1e-2, batch_tokens=64, pack_width=64, compile="off", checkpoint_every=0)


def test_a_nonfinite_step_is_skipped_counted_and_leaves_weights_and_optimizer_untouched(tmp_path):
    nan = NaNAtSteps({3})
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    config = TrainConfig(**{**SMALL, "checkpoint_every": 1})
    with pytest.warns(NonFiniteStep, match="step 3 skipped: loss nan"):
        result, weights = lora_run(config, nan.hook, nan.progress, checkpoint)
    clean, _ = lora_run(TrainConfig(**SMALL))
    assert result.skipped_steps == [3] and result.steps == clean.steps
    assert result.summary()["loss_curve"][2] is None
    assert result.losses[:2] == clean.losses[:2]  # identical until the bad step
    assert all(torch.isfinite(w).all() for w in weights.values())
    state = torch.load(checkpoint, weights_only=False)["optimizer"]["state"]
    assert {int(s["step"]) for s in state.values()} == {result.steps - 1}  # AdamW stepped once less


def test_a_streak_of_nonfinite_steps_stops_with_one_line_and_the_last_good_checkpoint_resumes(tmp_path):
    nan = NaNAtSteps(set(range(5, 100)))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    config = TrainConfig(**{**SMALL, "checkpoint_every": 2, "max_nonfinite": 3})
    with warnings.catch_warnings(), pytest.raises(TrainingError) as stopped:
        warnings.simplefilter("ignore", NonFiniteStep)
        lora_run(config, nan.hook, nan.progress, checkpoint)
    message = str(stopped.value)
    assert "\n" not in message and message.startswith("training stopped at step 7: loss nan, 3 non-finite steps")
    assert "checkpoint of step 4 is resumable" in message and "train.compile=off" in message
    assert "train.autocast=false" in message and "lower train.lr" in message
    assert torch.load(checkpoint, weights_only=False)["step"] == 4  # not overwritten during the streak
    # the cause removed (here: the hook), --resume continues from step 4 and ends as a clean run does
    resumed, weights = lora_run(config, checkpoint=checkpoint, resume=True)
    clean, clean_weights = lora_run(TrainConfig(**SMALL))
    assert resumed.resumed_from == 4 and resumed.losses == clean.losses
    assert all(torch.equal(weights[n], clean_weights[n]) for n in weights)


@pytest.mark.parametrize("factor", [float("nan"), 1.05])
def test_compiled_code_that_disagrees_with_eager_falls_back_and_the_run_equals_an_eager_run(factor):
    """A compiler whose every output is NaN, or finite but 5% off (which no loss check would notice)."""
    POISON.update(on=True, factor=factor)
    config = TrainConfig(**{**SMALL, "compile": "on", "compile_backend": "imprint_test_broken"})
    what = "compiled decoder layers and loss kernels failed their check against eager code on this machine"
    with pytest.warns(CompileFallback, match=what) as caught:
        result, weights = lora_run(config)
    (fallback,) = [str(w.message) for w in caught if w.category is CompileFallback]
    assert "step 1:" not in fallback and ("(eager: " in fallback or " vs eager " in fallback)  # the first-step proof
    eager, eager_weights = lora_run(TrainConfig(**SMALL))
    assert result.skipped_steps == [] and all(torch.isfinite(torch.tensor(result.losses)))
    assert len(result.compile["fallbacks"]) == 1 and not result.compile["layers"] and not result.compile["loss_kernels"]
    assert result.losses == eager.losses
    assert all(torch.equal(weights[n], eager_weights[n]) for n in weights)


def test_compiled_code_that_goes_nonfinite_later_falls_back_and_redoes_the_step():
    """As seen on an AVX512-BF16 CPU: the first compiled step is right, later ones are NaN."""
    config = TrainConfig(**{**SMALL, "compile": "on", "compile_backend": "imprint_test_broken"})

    def poison_after_first_step(done, total, info):
        POISON["on"] = done >= 1

    with pytest.warns(CompileFallback, match=r"step 2: loss nan"):
        result, weights = lora_run(config, progress=poison_after_first_step)
    eager, eager_weights = lora_run(TrainConfig(**SMALL))
    assert result.skipped_steps == [] and result.compile["fallbacks"]
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-5)
    for n in weights:
        torch.testing.assert_close(weights[n], eager_weights[n], rtol=1e-3, atol=1e-5)


def test_a_compile_that_fails_mid_run_falls_back_and_redoes_the_step_eagerly():
    """The first compile worked and agreed with eager code; a later one (a new batch shape; here the compile cache
    is dropped after step 2) fails to build. The run goes on eagerly from the same weights, as an eager run."""
    config = TrainConfig(**{**SMALL, "compile": "on", "compile_backend": "imprint_test_broken"})

    def break_the_compiler_after_step_2(done, total, info):
        if done == 2:
            POISON["fail"] = True
            torch._dynamo.reset()  # the next step compiles anew

    with pytest.warns(
        CompileFallback, match=r"could not be built on this machine \(step 3: torch.compile failed: .*at::vec"
    ):
        result, weights = lora_run(config, progress=break_the_compiler_after_step_2)
    POISON["fail"] = False
    eager, eager_weights = lora_run(TrainConfig(**SMALL))
    assert result.steps == eager.steps and result.skipped_steps == []
    assert not result.compile["layers"] and not result.compile["loss_kernels"] and len(result.compile["fallbacks"]) == 1
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-5)
    for n in weights:
        torch.testing.assert_close(weights[n], eager_weights[n], rtol=1e-3, atol=1e-5)


def test_an_error_that_is_not_the_compilers_is_not_hidden():
    config = TrainConfig(**{**SMALL, "compile": "on", "compile_backend": "imprint_test_broken"})

    class Broken(Exception):
        pass

    def hook(module, inputs, output):
        if hook.calls > 6:  # after the first step's proof
            raise Broken("not the compiler")
        hook.calls += 1

    hook.calls = 0
    with pytest.raises(Broken):
        lora_run(config, hook)


def test_compiled_code_that_agrees_is_kept():
    config = TrainConfig(**{**SMALL, "compile": "on", "compile_backend": "imprint_test_broken"})  # POISON off
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallback)
        result, _ = lora_run(config)
    assert result.compile["layers"] and result.compile["loss_kernels"] and result.compile["fallbacks"] == []


def test_a_module_with_a_nan_is_never_saved_nor_loaded(tmp_path, monkeypatch, capsys):
    model, _ = tiny_lm()
    lora = LoraMethod().attach(model, LoraMethodConfig(r=4, alpha=8))
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if "lora_A" in n)[0, 0] = float("nan")
    with pytest.raises(NonFiniteModuleError, match="hold NaN or inf"):
        check_trained(lora, "module m")

    learn_tiny_module(tmp_path, monkeypatch)
    directory = tmp_path / "ws" / "modules" / "m" / "1"
    check_module_files(directory)  # a healthy module passes
    tensors = load_file(directory / "adapter_model.safetensors")
    first = sorted(tensors)[0]
    tensors[first][0, 0] = float("inf")
    save_file(tensors, directory / "adapter_model.safetensors")
    capsys.readouterr()
    assert main(["ask", "Who is the CFO?", "--module", "m"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imprint: error: module") and "holds NaN or inf" in err and "\n" not in err


def test_a_diverging_run_stops_through_the_cli_with_one_line(tmp_path, monkeypatch, capsys):
    """A learning rate of 1e30 blows the weights up after one step: the next steps are non-finite and skipped,
    and the third in a row stops the run; no module is registered."""
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    (tmp_path / "a.md").write_text("Priya Raman has served as chief financial officer since March 2019. " * 3)
    args = ["learn", str(tmp_path / "a.md"), "--name", "m", "--set", "train.lr=1e30", "--set", "train.epochs=6"]
    assert main([*args, "--set", "train.batch_tokens=64", "--set", "train.pack_width=64"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("imprint: error:")]
    assert len(lines) == 1 and "training stopped at step" in lines[0] and "non-finite steps in a row" in lines[0]
    assert "imprint: warning: step 2 skipped" in err
    assert main(["modules"]) == 0 and "m@1" not in capsys.readouterr().out


def test_train_and_learn_help_list_the_methods(capsys):
    for command in ("train", "learn"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "full, lora, memory, prefix (default lora)" in " ".join(out.split())  # help text wraps
    with pytest.raises(SystemExit) as bad:
        main(["train", "--method", "lorra"])
    assert bad.value.code == 2 and "invalid choice: 'lorra'" in capsys.readouterr().err


def test_manifest_records_what_compiled(tmp_path, monkeypatch):
    learn_tiny_module(tmp_path, monkeypatch)
    manifest = json.loads((tmp_path / "ws" / "modules" / "m" / "1" / "manifest.json").read_text())
    assert manifest["metrics"]["compile"] == {
        "layers": False,
        "loss_kernels": False,
        "backend": "inductor",
        "dtype": "float32",
        "fallbacks": [],
    }
    assert manifest["metrics"]["skipped_steps"] == [] and manifest["heldin"] is None


def test_a_mismatch_is_remembered_for_this_machine_but_a_compiler_error_is_not():
    from imprint.train.compute import compile_verdict, failed_check, record_verdict

    record_verdict("k | layers", False, "loss nan vs eager 3.6")
    record_verdict("k | loss", False, "torch.compile failed: CppCompileError: C++ compile error")
    record_verdict("k2 | layers", True)
    assert failed_check(compile_verdict("k | layers"))
    assert not failed_check(compile_verdict("k | loss")) and not failed_check(compile_verdict("k2 | layers"))
    assert compile_verdict("unknown") is None and not failed_check(None)


def test_a_diverging_step_is_not_blamed_on_compiled_code_that_agrees():
    """NaN that eager code produces too (here: a hook on the layer's output) is skipped, and compiled code that
    agreed with eager code stays in use and is not recorded against the machine."""
    nan = NaNAtSteps({4})
    config = TrainConfig(**{**SMALL, "compile": "on", "compile_backend": "imprint_test_broken"})  # POISON off
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallback)
        warnings.simplefilter("ignore", NonFiniteStep)
        result, weights = lora_run(config, nan.hook, nan.progress)
    assert result.skipped_steps == [4] and result.compile["layers"] and result.compile["fallbacks"] == []
    assert all(torch.isfinite(w).all() for w in weights.values())
