"""Class-activation maps: where in the image the evidence for a class lies.

- `passes.py`: the compiled passes (features and gradients, features only,
  batched masked inputs) that every method shares.
- `base.py`: `CamMethod`, and the ReLU-and-divide-by-max every map ends with.
- One file per method, each defined as pytorch-grad-cam 1.5.7 defines it:
  `gradcam.py` (and the `grad_cam` shortcut), `gradcam_plus_plus.py`,
  `xgradcam.py`, `layercam.py`, `hirescam.py`, `eigencam.py`, `scorecam.py`.
- `methods.py`: `CAM_METHODS` in display order, `class_activation_map(s)`.
"""
