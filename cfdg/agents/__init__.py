"""Offline-to-online agents (IQL, PEX, APL, Cal-QL) behind one small interface.

Deliberately empty: import the module you need (`registry.make_agent`, `config.AgentConfig`,
`networks`, ...), so the dataset stage, which borrows `networks` and `optim`, loads no agent.
"""
