"""Studies: grids of pipeline runs and the paper-style report built from their committed results.

The modules import one way, each only those above it in this list (tests/test_study.py checks):

    spec.py       a study file as a validated list of cells (nothing runs yet)
    keys.py       what a cell runs, and the stage keys that say which stages cells share
    results.py    a finished cell's committed results, results/<study>/cells/<cell>.json
    workspace.py  studies/<name>/: cell workspaces and state files; Plan (a study against a project)
    cell.py       one cell's stages through the DVC runner (pipeline/repro.py), here or on a worker
    report.py     Tables 1, 2, 3, the compute table and curves, from the committed results only
    run.py        the cells N at once through Prefect on this machine; the report as artifacts
    pool.py       the cells as flow runs on a Prefect work pool across machines
    cli.py        `cfdg study run | report | cells` (`python -m pipeline.study`)

This file imports nothing, so importing one module loads only what that module needs.
"""
