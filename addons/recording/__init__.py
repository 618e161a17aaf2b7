"""Write-once records of every exchange: canonical JSON, signing, record building, the spool, the stores, verify and prune."""
