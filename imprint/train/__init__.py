"""Training: turn synthetic records into token batches and run one explicit loop over them."""
