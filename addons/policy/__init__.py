"""Reading the policy file: the strict `Section` reader, and the `Policy` composed from each feature's own section parser."""
