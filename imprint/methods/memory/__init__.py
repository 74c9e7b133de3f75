"""Memory layers: a product-key key-value table beside chosen MLPs, trained sparsely (the slots the corpus uses)."""
