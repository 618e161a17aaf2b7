"""Write-once records of every exchange: building, chaining and signing them, the spool and its uploader,
the stores, reading back, verify and prune."""
