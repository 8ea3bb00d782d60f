"""Settings for the whole suite."""

import os

# A server computes its default atlases in the background when it starts
# (`convviz_app.cached.warm_up_default_atlases`); in tests that would trace
# graphs and take the CPU while tests count traces and time. Tests that want
# it (the browser test's server) set it back.
os.environ.setdefault("CONVVIZ_WARM_UP", "0")
