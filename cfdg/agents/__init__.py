"""Offline-to-online agents (IQL, PEX, APL, Cal-QL) behind one small interface.

Deliberately empty: import the module you need (`registry.make_agent`, `registry.agent_config`,
`td3.TD3`, ...), so the dataset stage, which trains the one TD3, loads no other agent.
"""
