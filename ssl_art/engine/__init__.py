"""ssl_art.engine: the pretraining loop and what surrounds it, importable without argparse.

``loop.fit`` runs epochs with AMP, clipping, accumulation, the finite-loss guard and checkpoint cadence (checkpoint
I/O itself lives in the leaf module :mod:`ssl_art.checkpoint`); ``pretrain.run_pretrain`` wires a config to it;
``optim`` holds the parameter groups, ``sampler`` the resumable sampler and ``rundir`` the run directory. The
schedules, device, seeding and logging helpers are leaves in :mod:`ssl_art.runtime`. Only entry points and
fine-tuning import the engine; evaluation and serving never do.
"""
