"""Explanations of many images at once, and the report files they make.

- `discovery.py`: the image files under the paths a user names (files or
  folders, recursive).
- `batch.py`: maps and faithfulness scores for each image, with the masked
  inputs of several images scored in shared batches; the same numbers as the
  one-image functions (`class_activation_map`, `deletion_insertion`, ...).
- `files.py`: the report folder (report.csv, maps as .npy, overlays as PNG,
  manifest.json), written the same by the `convviz` command and the Dataset page.
- `summary.py`: the method leaderboard over a set of images.
"""
