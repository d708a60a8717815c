"""Grain top-down input pipelines, installed as `mamkpd_jax.data_pipelines`.

One module per concept: `sources` (annotation files and boxes files -> instance dicts),
`transforms` (mmpose 1.x train/val transforms), `geometry` (box -> crop -> image),
`codecs` (MSRA, UDP, DARK heatmaps and the flip-test helpers), `metadata` (keypoint
layouts), `pipeline` (`create_datasets(config)`) and `tfds_builder` (ArrayRecord
datasets).
"""
