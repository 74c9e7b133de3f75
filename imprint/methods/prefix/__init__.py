"""Prefix / KV-cache "cartridge": a trained key-value cache placed before every prompt (Cartridges, 2025)."""
