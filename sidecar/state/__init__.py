"""What the sidecar keeps on disk: certificate lineages, the ledger, placeholders, run logs, atomic writes."""
