"""cutscope.viewer: reads the store. Export, analysis, rendering and the terminal UI.

It never patches anything and imports nothing from ``cutscope.integrations``.
"""
