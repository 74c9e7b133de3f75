"""`imprint export --format ollama`: the GGUF beside a Modelfile whose template is the prompt format the module was
trained with and whose stops are the answer rule's. Ollama is not installed here: the Modelfile is read back with
a reader that follows Ollama's parser (parser/parser.go: quoted values are taken as they are, no escapes)."""

from transformers import AutoModelForCausalLM

from imprint.cli import main
from imprint.export.ollama import modelfile
from imprint.inference.rows import ANSWER_STOPS
from imprint.prompts import qa_prompt


def read_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, value) pairs as Ollama reads them: a value ends at the end of its line unless a quote is open."""
    commands, lines = [], iter(text.splitlines(keepends=True))
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        if name == "PARAMETER":
            name, _, value = value.partition(" ")
        value = value.rstrip("\n")
        quote = '"""' if value.startswith('"""') else '"' if value.startswith('"') else ""
        while quote and (len(value) < 2 * len(quote) or not value.endswith(quote)):
            value += "\n" + next(lines).rstrip("\n")
        commands.append((name.lower(), value[len(quote) : len(value) - len(quote)] if quote else value))
    return commands


def test_ollama_directory_has_the_gguf_and_the_modelfile(export_ws, tmp_path, capsys):
    out = tmp_path / "ollama"
    argv = ["--workspace", str(export_ws), "export", "l", "--format", "ollama", "--out", str(out),
            "--set", "export.llama_cpp=off"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"ollama create l-v1 -f {out / 'Modelfile'}" in printed and "greedy" in printed
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "imprint_module.json", "model.gguf"]
    text = (out / "Modelfile").read_text()
    assert text == modelfile("l@1")
    assert read_modelfile(text) == [
        ("from", "./model.gguf"),
        ("template", "Question: {{ .Prompt }}\nAnswer:"),
        ("stop", "\n"),  # a real newline: Ollama would read "\\n" as a backslash and an n
        ("stop", "Question:"),
        ("temperature", "0"),
    ]
    assert qa_prompt("{{ .Prompt }}") == "Question: {{ .Prompt }}\nAnswer:" and ANSWER_STOPS == ("\n", "Question:")
    assert AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model.gguf").config.model_type == "llama"


def test_modelfile_text():
    assert modelfile("notes@3") == (
        "# imprint module notes@3: ollama create notes-v3 -f Modelfile\n"
        "FROM ./model.gguf\n"
        'TEMPLATE "Question: {{ .Prompt }}\nAnswer:"\n'
        'PARAMETER stop "\n"\n'
        'PARAMETER stop "Question:"\n'
        "PARAMETER temperature 0\n"
    )
