"""Pipeline stages: thin functions from input paths to output paths, one module per stage.

Each module has a function that does the work given explicit paths and typed configs, and a
`main()` that DVC calls as `python -m stages.<name> [--round k]`, reading params.yaml and the
fixed artifact layout in `stages.layout`.
"""
