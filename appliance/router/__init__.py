"""The router: for each request, local or cloud, and why (issue 5).

`decide.Router` applies the precedence (explicit choice, air-gap, privacy/policy,
capacity, tier); `tier` and `privacy` are its inspectors; `settings` is the YAML
`router:` section. Nothing here reads or logs prompt text beyond inspecting it.
"""
