"""imprint: teach a language model a private document corpus, and prove what it learned."""

__version__ = "0.1.0"
