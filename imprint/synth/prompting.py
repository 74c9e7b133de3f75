"""Prompt templates of the generator strategies: packaged YAML files a user can override, each versioned.

One file per strategy in `imprint/synth/templates/<strategy>.yaml`:

    version: 1                    # bump when the wording changes on purpose
    prompts:
      plain:                      # one entry per prompt; its id is "<strategy>.<name>"
        max_tokens: 200
        stop: ["\\n\\n"]
        template: |-              # Jinja2; the prompt ends where the generator continues
          ...few-shot examples...
          Passage: {{ text }}
          Plain English:
    # any other keys are data the strategy reads (e.g. active reading's default study tasks)

The templates are few-shot completion prompts, so a base model (the embedded default) continues them; a chat
model receives the same text as its user message. `synth.templates=DIR` points at a folder of files with the
same names: their prompts replace (or, for paraphrase styles, add to) the packaged ones. Every record keeps
the template id and `version+sha` of its prompt, so a changed prompt is visible in the data it made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from imprint.errors import ConfigError

PACKAGE_DIR = Path(__file__).parent / "templates"
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@dataclass(frozen=True)
class Template:
    id: str  # "<strategy>.<name>"
    text: str
    version: str  # "<declared version>+<sha of the text and settings>"
    source: str  # the file it came from
    max_tokens: int
    stop: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.id.split(".", 1)[1]

    def render(self, **values) -> str:
        try:
            return _ENV.from_string(self.text).render(**values)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"template {self.id} ({self.source}): {exc}") from None


@dataclass(frozen=True)
class TemplateSet:
    strategy: str
    prompts: dict[str, Template]
    data: dict  # the file's other keys

    def __getitem__(self, name: str) -> Template:
        if name not in self.prompts:
            raise ConfigError(
                f"no prompt {name!r} in the {self.strategy} templates (have: {', '.join(sorted(self.prompts))})"
            )
        return self.prompts[name]

    def versions(self) -> dict[str, str]:
        return {t.id: t.version for t in self.prompts.values()}


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read template file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompts", {}), dict):
        raise ConfigError(f"template file {path} must be a mapping with a 'prompts' mapping")
    return data


def _template(strategy: str, name: str, entry, declared, source: Path) -> Template:
    if isinstance(entry, str):
        entry = {"template": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("template"), str):
        raise ConfigError(f"{source}: prompt {name!r} needs a 'template' string")
    unknown = set(entry) - {"template", "max_tokens", "stop"}
    if unknown:
        raise ConfigError(f"{source}: prompt {name!r} has unknown keys {sorted(unknown)} (template, max_tokens, stop)")
    stop = entry.get("stop", ["\n\n"])
    if isinstance(stop, str):
        stop = [stop]
    max_tokens = int(entry.get("max_tokens", 200))
    if max_tokens < 1:
        raise ConfigError(f"{source}: prompt {name!r} has max_tokens < 1")
    try:
        _ENV.parse(entry["template"])
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{source}: prompt {name!r} is not a valid Jinja2 template: {exc}") from None
    digest = hashlib.sha1(repr((entry["template"], max_tokens, tuple(stop))).encode()).hexdigest()[:8]
    return Template(
        f"{strategy}.{name}", entry["template"], f"{declared}+{digest}", str(source), max_tokens, tuple(stop)
    )


def load_templates(strategy: str, override_dir: str = "") -> TemplateSet:
    """The packaged templates of `strategy`, with the prompts of `override_dir/<strategy>.yaml` on top."""
    files = [PACKAGE_DIR / f"{strategy}.yaml"]
    if override_dir:
        folder = Path(override_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"synth.templates: {override_dir} is not a directory")
        if (folder / f"{strategy}.yaml").is_file():
            files.append(folder / f"{strategy}.yaml")
    prompts: dict[str, Template] = {}
    data: dict = {}
    for path in files:
        raw = _read(path)
        declared = raw.get("version", 1)
        for name, entry in raw.get("prompts", {}).items():
            prompts[str(name)] = _template(strategy, str(name), entry, declared, path)
        data.update({k: v for k, v in raw.items() if k not in ("version", "prompts")})
    return TemplateSet(strategy, prompts, data)
