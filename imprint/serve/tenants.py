"""Tenants and their API keys: which collections a key owns (and so which modules it may use), and its limits.

The keys file (YAML) names tenants; each has keys, the collections it owns (exact names or globs such as
`acme-*`), optionally a narrower set of module names, whether it may use the bare base model, and limits:

    tenants:
      acme:
        keys: ["sk-acme-1", "sha256:9f86d08..."]   # plain, or the sha256 hex of the key (keeps the file secret-free)
        collections: ["acme", "acme-*"]  # its documents: retrieval and evidence search only these
        modules: ["handbook*"]  # of the modules trained on its collections, only these (default: all of them)
        base: true              # may call the base model itself (default false)
        max_tokens: 256         # at most this per request (default: the server's max_tokens)
        max_concurrency: 4      # requests in flight at once (default: the server's max_concurrency)
        admin: false            # true: /v1/imprint/stats shows server-wide numbers (default: this tenant's only)

A module is usable by a key only when the key owns the collection the module was trained on: its weights hold
that collection's text. Without a keys file the server is open (no key needed, every collection and module
visible, server-wide stats): meant for 127.0.0.1. With one, a request without a known key is a 401, and another
tenant's module or collection is a 404 exactly like one that does not exist, so a key cannot even learn which
modules or collections other tenants have.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from imprint.errors import ConfigError
from imprint.serve.errors import APIError


@dataclass(frozen=True)
class Tenant:
    name: str
    modules: tuple[str, ...] = ("*",)
    base: bool = False
    max_tokens: int | None = None
    max_concurrency: int | None = None
    collections: tuple[str, ...] = ()
    admin: bool = False

    def allows(self, module_name: str) -> bool:
        """Whether the module name is among this tenant's (its collection must be owned too: `owns`)."""
        return any(fnmatch.fnmatchcase(module_name, pattern) for pattern in self.modules)

    def owns(self, collection: str) -> bool:
        return any(fnmatch.fnmatchcase(collection, pattern) for pattern in self.collections)


OPEN = Tenant("default", modules=("*",), base=True, collections=("*",), admin=True)
FIELDS = {"keys", "collections", "modules", "base", "max_tokens", "max_concurrency", "admin"}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _positive(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a positive integer, got {value!r}")
    return value


def _strings(value, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings")
    return value


class KeyRing:
    """Maps API keys (by their sha256) to tenants; `None` means the server is open."""

    def __init__(self, tenants: dict[str, Tenant] | None):
        self.by_digest = tenants

    @classmethod
    def open(cls) -> KeyRing:
        return cls(None)

    @classmethod
    def load(cls, path: Path | str) -> KeyRing:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"keys file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"keys file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict) or not isinstance(data.get("tenants"), dict) or not data["tenants"]:
            raise ConfigError(f"keys file {path} needs a non-empty `tenants:` mapping (see `imprint serve --help`)")
        by_digest: dict[str, Tenant] = {}
        for name, spec in data["tenants"].items():
            where = f"{path}: tenant {name}"
            if not isinstance(spec, dict):
                raise ConfigError(f"{where} must be a mapping with keys and modules")
            unknown = sorted(set(spec) - FIELDS)
            if unknown:
                raise ConfigError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(FIELDS))})")
            for flag in ("base", "admin"):
                if not isinstance(spec.get(flag, False), bool):
                    raise ConfigError(f"{where}: {flag} must be true or false")
            if "modules" in spec and "collections" not in spec:
                raise ConfigError(
                    f"{where}: name the collections it owns (`collections: [...]`): a module is usable only by keys "
                    "that own the collection it was trained on"
                )
            tenant = Tenant(
                str(name),
                tuple(_strings(spec.get("modules", ["*"]), f"{where}: modules")),
                spec.get("base", False),
                _positive(spec.get("max_tokens"), f"{where}: max_tokens"),
                _positive(spec.get("max_concurrency"), f"{where}: max_concurrency"),
                tuple(_strings(spec.get("collections", []), f"{where}: collections")),
                spec.get("admin", False),
            )
            for key in _strings(spec.get("keys"), f"{where}: keys"):
                hashed = key.startswith("sha256:")
                if hashed and not re.fullmatch(r"[0-9a-f]{64}", key[7:]):
                    raise ConfigError(f"{where}: a sha256: key needs 64 lowercase hex digits")
                digest = key[7:] if hashed else _digest(key)
                if digest in by_digest:
                    raise ConfigError(f"{where}: a key is listed twice (also for tenant {by_digest[digest].name})")
                by_digest[digest] = tenant
        return cls(by_digest)

    @property
    def is_open(self) -> bool:
        return self.by_digest is None

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of an `Authorization: Bearer KEY` header; 401 when keys are configured and it is unknown."""
        if self.by_digest is None:
            return OPEN
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(
                401,
                "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
                code="missing_api_key",
            )
        tenant = self.by_digest.get(_digest(key.strip()))
        if tenant is None:
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
        return tenant
