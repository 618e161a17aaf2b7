"""Command rules: judging every tool call the model proposes against ``[commands]`` (allow,
block, or hold for an approver) before the client can run it.

`config` parses ``[commands]`` and the built-in pack (``policies/rules/commands.toml``),
`fields` finds what a rule looks at (a field of the input, a normalised path, globs), `shell`
splits a Bash command into the simple commands it runs, `judge` gives the verdict and the call
hash approvals are bound to, `notices` the texts that replace a call that was not run.

Pure core: no mitmproxy here (the adapter is `gatehouse.mitm.commands`).
"""
