"""Faithfulness scores: does a heatmap point at what the model actually uses?

- `deletion_insertion.py`: the RISE deletion and insertion curves and their
  areas (Petsiuk et al., 2018).
- `average_drop.py`: Average Drop and Increase in Confidence (Chattopadhay et
  al., 2018).
- `random_baseline.py`: the same scores for seeded random maps, the chance
  level a method must beat on this image.
- `road.py`: ROAD, removal by noisy linear imputation, most and least
  relevant first (Rong et al., 2022).
- `sanity.py`: the cascading model-randomisation check (Adebayo et al., 2018),
  on a private copy of the model.

All of them score many masked inputs in batches through
`convviz_core.cam.passes.score_masked_inputs`, the function Score-CAM uses.
"""
