"""Grain top-down input pipelines, installed as `mamkpd_jax.data_pipelines`.

Empty until the data-pipeline issue (#4) lands: dataset sources, transforms, heatmap
codecs and `create_datasets(config)` will live here.
"""
