"""ssl_art.engine: the training loop and what surrounds it, importable without argparse.

``loop.fit`` runs epochs with AMP, clipping, accumulation, the finite-loss guard and checkpoint cadence (checkpoint
I/O itself lives in the leaf module :mod:`ssl_art.checkpoint`); ``pretrain.run_pretrain`` wires a config to it;
``schedules`` and ``optim`` hold the per-step schedules and parameter groups, ``sampler`` the resumable sampler and
``rundir`` the run directory, device, seeding and logging helpers. Only entry points import the engine.
"""
