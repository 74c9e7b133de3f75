"""Serving: one base model and every module of a workspace behind an OpenAI-compatible API (`imprint serve`)."""

from imprint.serve.app import create_app
from imprint.serve.config import ServeConfig
from imprint.serve.server import BackgroundServer, free_port, serve

__all__ = ["BackgroundServer", "ServeConfig", "create_app", "free_port", "serve"]
