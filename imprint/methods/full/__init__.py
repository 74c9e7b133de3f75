"""Full fine-tuning: every weight of the base trains (embeddings optionally frozen)."""
