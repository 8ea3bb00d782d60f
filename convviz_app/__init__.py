"""The ConvViz dashboard's helpers: the shared sidebar, cached calls into core, and figures.

`convviz_core` computes; this package only turns its arrays into what
Streamlit shows (`figures`, without Streamlit), caches core calls per model
and image (`cached`), and draws the sidebar that every page shares
(`sidebar`). Pages import from here and stay thin.
"""
