"""The `convviz` command: explanations, patterns and activations of a folder, and the dashboard.

`python -m convviz_cli` or, once installed (`pip install --no-deps -e .`),
`convviz`. It prints (progress on stderr, results as files), so it is not
part of the computing core; it calls `convviz_core` for everything.
"""
