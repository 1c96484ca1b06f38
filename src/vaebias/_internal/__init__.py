"""The leaf layer: errors, validated configs, atomic files and YAML/JSON, logging.

Everything else in vaebias may import from here; nothing here imports from vaebias.
"""
