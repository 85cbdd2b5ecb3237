"""Generator variants: one class per way of producing the synthetic store, named in `registry`.

Import from the submodules (`registry`, `base`, ...): this file imports nothing.
"""
