"""The CFDG generative model: EDM diffusion over transitions, conditioned on offline/online class.

Import from the submodules (config, model, train, sample, checkpoint, ...): this file imports
nothing, so loading one submodule (e.g. the no-model placeholder for round 0) does not load, and
make a stage depend on, the whole package.
"""
