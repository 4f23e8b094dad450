"""The Gradio demo (search, classify, caption, change caption, generate); lands with the demo issue.

This package imports the library; the library never imports it.
"""
